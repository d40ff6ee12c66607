//! The GraphQL door (SPEC §6): `POST /graphql` (and GraphiQL on `GET /graphql`) with
//! async-graphql.
//!
//! Callers authenticate with a lanyard access token (`Authorization: Bearer`); its `aud` is the
//! tenant. Resolvers ([`schema`]) call the authority's use-cases and map its errors once to
//! `extensions.code` (`UNAUTHENTICATED`, `FORBIDDEN`, `NOT_FOUND`, `BAD_USER_INPUT`,
//! `CONFLICT`, `INTERNAL`); errors the engine raises itself (syntax, unknown fields, wrong
//! types, limits) are `BAD_USER_INPUT`. Query depth and complexity, batch size and the body
//! are limited; parsed queries are remembered (`documents`). This module imports nothing of the
//! other doors.

use std::sync::Arc;

use async_graphql::{BatchRequest, BatchResponse, EmptySubscription, Schema, ServerError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::authority::{Authority, Caller, TokenRejected};

mod documents;
pub mod schema;

pub use schema::{Mutation, Query};

pub type LanyardSchema = Schema<Query, Mutation, EmptySubscription>;

/// Requests larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Operations in one batch.
pub const MAX_BATCH: usize = 10;
const MAX_DEPTH: usize = 8;
const MAX_COMPLEXITY: usize = 250;

/// The schema, with its limits.
pub fn build_schema(authority: Arc<Authority>) -> LanyardSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(authority)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(8)
        .finish()
}

/// The SDL of the schema, as checked in at `graphql/schema.graphql`.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription)
        .finish()
        .sdl()
}

#[derive(Clone)]
struct GraphqlState {
    schema: LanyardSchema,
    authority: Arc<Authority>,
    documents: Arc<documents::Documents>,
}

/// `/graphql`, to be merged into the HTTP server.
pub fn router(authority: Arc<Authority>) -> Router {
    let state = GraphqlState {
        schema: build_schema(authority.clone()),
        authority,
        documents: Default::default(),
    };
    Router::new()
        .route("/graphql", get(graphiql).post(execute))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}

async fn execute(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_USER_INPUT",
            "the request body is larger than 64 KiB",
        );
    };
    let mut batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &format!("the body is not a GraphQL request: {e}"),
            );
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > MAX_BATCH
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            &format!("at most {MAX_BATCH} operations per batch"),
        );
    }
    batch
        .iter_mut()
        .for_each(|request| state.documents.prepare(request));
    let caller = match bearer(&headers) {
        None => None,
        Some(token) => match state.authority.verify_bearer(token).await {
            Ok(known) => Some(Caller::new(
                known.tenant.clone(),
                known.verified.claims.clone(),
            )),
            Err(TokenRejected::Unavailable) => {
                return error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "INTERNAL",
                    "the token cannot be checked right now; try again later",
                );
            }
            Err(e) => {
                tracing::debug!("graphql: token refused: {e}");
                None
            }
        },
    };
    let batch = match caller {
        Some(caller) => batch.data(caller),
        None => batch,
    };
    let mut response = state.schema.execute_batch(batch).await;
    match &mut response {
        BatchResponse::Single(r) => r.errors.iter_mut().for_each(code_engine_error),
        BatchResponse::Batch(rs) => rs
            .iter_mut()
            .flat_map(|r| r.errors.iter_mut())
            .for_each(code_engine_error),
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(response)).into_response()
}

/// Errors raised by the engine (parse, validation, limits) carry no code: they are the
/// caller's to fix.
fn code_engine_error(error: &mut ServerError) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", "BAD_USER_INPUT");
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn graphiql() -> Html<&'static str> {
    Html(GRAPHIQL)
}

/// GraphiQL from its CDN, pointed at this endpoint; the token goes in the Headers tab.
const GRAPHIQL: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>lanyard GraphQL</title>
  <link rel="stylesheet" href="https://unpkg.com/graphiql@3/graphiql.min.css">
</head>
<body style="margin:0;height:100vh">
  <div id="graphiql" style="height:100vh"></div>
  <script crossorigin src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
  <script crossorigin src="https://unpkg.com/graphiql@3/graphiql.min.js"></script>
  <script>
    ReactDOM.createRoot(document.getElementById('graphiql')).render(
      React.createElement(GraphiQL, {
        fetcher: GraphiQL.createFetcher({ url: '/graphql' }),
        defaultHeaders: '{"Authorization": "Bearer <access token>"}',
      })
    );
  </script>
</body>
</html>
"#;
