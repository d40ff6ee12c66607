//! The GraphQL door (SPEC §6): `POST /graphql` (and GraphiQL on `GET /graphql`) with
//! async-graphql.
//!
//! Callers authenticate with a lanyard access token (`Authorization: Bearer`); its `aud` is the
//! tenant. The token is checked before the body is parsed: a request without a valid one is
//! answered `401` whatever its document (only the GraphiQL page and its assets, served from the
//! binary, are open). A document's cost is then bounded before the engine validates it
//! ([`documents`]: each fragment counted once per use, no more than [`MAX_MINTS`] mint fields and
//! [`MAX_LISTS`] list reads a request, a batch counted whole), new documents are parsed and
//! measured on the blocking pool, two at a time, and a request that still runs past its time
//! budget is ended. Resolvers ([`schema`]) call the authority's use-cases and map its errors once to
//! `extensions.code` (`UNAUTHENTICATED`, `FORBIDDEN`, `NOT_FOUND`, `BAD_USER_INPUT`,
//! `CONFLICT`, `INTERNAL`); errors the engine raises itself (syntax, unknown fields, wrong
//! types, limits) are `BAD_USER_INPUT`. Query depth and complexity, batch size and the body
//! are limited; checked documents are remembered. This module imports nothing of the
//! other doors.

use std::sync::Arc;

use async_graphql::{BatchRequest, BatchResponse, EmptySubscription, Schema, ServerError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::authority::{Authority, Caller, TokenRejected};
use crate::metrics::{GraphqlOutcome, Metrics};

mod documents;
pub mod schema;

pub use schema::{Mutation, Query};

pub type LanyardSchema = Schema<Query, Mutation, EmptySubscription>;

/// Requests larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Operations in one batch.
pub const MAX_BATCH: usize = 10;
/// Mint fields in one request, a batch counted whole (SPEC §7).
pub const MAX_MINTS: u64 = 20;
/// Errors reported per operation; the rest are left out.
const MAX_ERRORS: usize = 20;
/// Fields reading a whole list in one request, a batch counted whole.
pub const MAX_LISTS: u64 = 10;
/// New documents parsed at once, the rest waiting their turn.
static PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// A request still running after this long is ended.
const EXECUTION_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);
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
    metrics: Arc<Metrics>,
}

/// `/graphql`, to be merged into the HTTP server.
pub fn router(authority: Arc<Authority>, metrics: Arc<Metrics>) -> Router {
    let state = GraphqlState {
        schema: build_schema(authority.clone()),
        authority,
        documents: Default::default(),
        metrics,
    };
    Router::new()
        .route("/graphql", get(graphiql).post(execute))
        .route("/graphql/assets/{name}", get(graphiql_asset))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}

/// `POST /graphql`, timed by outcome (`lanyard_graphql_request_duration_seconds`).
async fn execute(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let (response, had_errors) = answer(&state, &headers, body).await;
    let outcome = match response.status() {
        StatusCode::OK if had_errors => GraphqlOutcome::Errors,
        StatusCode::OK => GraphqlOutcome::Ok,
        StatusCode::UNAUTHORIZED => GraphqlOutcome::Unauthenticated,
        StatusCode::SERVICE_UNAVAILABLE => GraphqlOutcome::Unavailable,
        _ => GraphqlOutcome::BadRequest,
    };
    state.metrics.graphql_request(outcome, started.elapsed());
    response
}

/// The answer to a GraphQL request, and whether an operation answered 200 had errors.
async fn answer(
    state: &GraphqlState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (Response, bool) {
    let response = match run(state, headers, body).await {
        Ok(response) => response,
        Err(refused) => return (refused, false),
    };
    let had_errors = match &response {
        BatchResponse::Single(r) => !r.errors.is_empty(),
        BatchResponse::Batch(rs) => rs.iter().any(|r| !r.errors.is_empty()),
    };
    let answered = ([(header::CACHE_CONTROL, "no-store")], axum::Json(response)).into_response();
    (answered, had_errors)
}

/// Runs a request: its operations' answers, or the refusal of the whole request.
async fn run(
    state: &GraphqlState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<BatchResponse, Response> {
    // Who calls is settled before anything of the document is read (SPEC §7): an anonymous
    // request costs a header lookup, whatever its body holds.
    let caller = match bearer(headers) {
        None => {
            return Err(unauthenticated(
                "send a lanyard access token as Authorization: Bearer",
            ));
        }
        Some(token) => match state.authority.verify_bearer_or_delegation(token).await {
            Ok(known) => Caller::new(known.tenant.clone(), known.verified.claims.clone()),
            Err(TokenRejected::Unavailable(cause)) => {
                cause.log("graphql");
                return Err(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "INTERNAL",
                    "the token cannot be checked right now; try again later",
                ));
            }
            Err(e) => {
                tracing::debug!("graphql: token refused: {e}");
                return Err(unauthenticated("the access token is not valid here"));
            }
        },
    };
    let Ok(body) = body else {
        return Err(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_USER_INPUT",
            "the request body is larger than 64 KiB",
        ));
    };
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &format!("the body is not a GraphQL request: {e}"),
            ));
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > MAX_BATCH
    {
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
            &format!("at most {MAX_BATCH} operations per batch"),
        ));
    }
    let batch = match prepare(&state.documents, batch).await {
        Ok(batch) => batch,
        Err(documents::Refused(message)) => {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "BAD_USER_INPUT",
                &message,
            ));
        }
    };
    let run = state.schema.execute_batch(batch.data(caller));
    let Ok(mut response) = tokio::time::timeout(EXECUTION_BUDGET, run).await else {
        tracing::warn!("graphql: a request ran past its {EXECUTION_BUDGET:?} budget and was ended");
        return Err(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "the request took too long and was ended; what it changed before is kept",
        ));
    };
    let responses = match &mut response {
        BatchResponse::Single(r) => std::slice::from_mut(r),
        BatchResponse::Batch(rs) => rs.as_mut_slice(),
    };
    for r in responses {
        // A document naming thousands of unknown variables or arguments would otherwise be
        // answered with an error each: an answer many times the request's size.
        r.errors.truncate(MAX_ERRORS);
        r.errors.iter_mut().for_each(code_engine_error);
    }
    Ok(response)
}

/// Gives every request of the batch its checked document, and refuses the whole batch if one
/// document costs too much or does not parse, or all of them together mint more than
/// [`MAX_MINTS`] tokens or read more than [`MAX_LISTS`] lists.
/// Documents seen before are found inline; new ones are parsed and measured on the blocking
/// pool, off the threads that serve other requests.
async fn prepare(
    documents: &Arc<documents::Documents>,
    mut batch: BatchRequest,
) -> Result<BatchRequest, documents::Refused> {
    let mut cost = documents::Cost::default();
    let mut unknown = false;
    for request in batch.iter_mut() {
        match documents.remembered(request) {
            Some(one) => {
                cost.mints += one.mints;
                cost.lists += one.lists;
            }
            None => unknown = true,
        }
    }
    if unknown {
        // A parse holds several times its text in memory: a few at a time, however many
        // requests bring new documents at once.
        let _turn = PARSING
            .acquire()
            .await
            .map_err(|_| documents::Refused("the server is shutting down".into()))?;
        let documents = documents.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let mut total = documents::Cost::default();
            for request in batch.iter_mut() {
                let cost = documents.check(request)?;
                total.mints += cost.mints;
                total.lists += cost.lists;
            }
            Ok::<_, documents::Refused>((batch, total))
        })
        .await
        .map_err(|_| documents::Refused("the query could not be read".into()))??;
        (batch, cost) = checked;
    }
    if cost.mints > MAX_MINTS {
        return Err(documents::Refused(format!(
            "a request may mint at most {MAX_MINTS} local API tokens; this one asks for {}",
            cost.mints
        )));
    }
    if cost.lists > MAX_LISTS {
        return Err(documents::Refused(format!(
            "a request may read at most {MAX_LISTS} lists (localApiTokens, systems, auditEvents, shares, sharesReceived, applicationAccess); this one asks for {}",
            cost.lists
        )));
    }
    Ok(batch)
}

fn unauthenticated(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
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

async fn graphiql() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        Html(GRAPHIQL),
    )
        .into_response()
}

/// GraphiQL's scripts and styles, served from the binary: the page works where no other host
/// can be reached. Versions and licences: `src/graphql/graphiql/LICENSES.txt`.
async fn graphiql_asset(Path(name): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match name.as_str() {
        "graphiql.min.js" => (
            include_bytes!("graphiql/graphiql.min.js"),
            "text/javascript",
        ),
        "graphiql.min.css" => (include_bytes!("graphiql/graphiql.min.css"), "text/css"),
        "react.production.min.js" => (
            include_bytes!("graphiql/react.production.min.js"),
            "text/javascript",
        ),
        "react-dom.production.min.js" => (
            include_bytes!("graphiql/react-dom.production.min.js"),
            "text/javascript",
        ),
        "start.js" => (GRAPHIQL_START.as_bytes(), "text/javascript"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// The GraphiQL page, pointed at this endpoint; the token goes in the Headers tab.
const GRAPHIQL: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>lanyard GraphQL</title>
  <link rel="stylesheet" href="/graphql/assets/graphiql.min.css">
</head>
<body style="margin:0;height:100vh">
  <div id="graphiql" style="height:100vh"></div>
  <script src="/graphql/assets/react.production.min.js"></script>
  <script src="/graphql/assets/react-dom.production.min.js"></script>
  <script src="/graphql/assets/graphiql.min.js"></script>
  <script src="/graphql/assets/start.js"></script>
</body>
</html>
"#;

const GRAPHIQL_START: &str = r#"ReactDOM.createRoot(document.getElementById('graphiql')).render(
  React.createElement(GraphiQL, {
    fetcher: GraphiQL.createFetcher({ url: '/graphql' }),
    defaultHeaders: '{"Authorization": "Bearer <access token>"}',
  })
);
"#;
