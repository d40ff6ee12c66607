//! Sign-in on the web (SPEC §9): the authorization requests the hosted page works on, the
//! authorization codes the token endpoint redeems, and browsers' sign-in sessions.
//!
//! Every one-time thing is consumed by one conditional `UPDATE … RETURNING` that also checks
//! what is presented: of concurrent redemptions of a code, or of a mailed code or link, exactly
//! one gets the row.

use super::{Db, StoreResult, on_pool, on_writer};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestRow {
    pub id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: String,
    pub browser_hash: Vec<u8>,
    pub csrf: String,
    pub email: Option<String>,
    pub code_hash: Option<Vec<u8>>,
    pub link_hash: Option<Vec<u8>>,
    pub attempts: i64,
    pub done: bool,
    pub created_at: i64,
    pub expires_at: i64,
}

const REQUEST_COLUMNS: &str =
    "id, tenant_id, client_id, redirect_uri, scope, state, code_challenge,
    browser_hash, csrf, email, code_hash, link_hash, attempts, done, created_at, expires_at";

pub async fn insert_request(db: &Db, r: &RequestRow) -> StoreResult<()> {
    let sql = format!(
        "INSERT INTO authorization_requests ({REQUEST_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    on_writer!(db, pool => sqlx::query(&sql)
        .bind(&r.id)
        .bind(&r.tenant_id)
        .bind(&r.client_id)
        .bind(&r.redirect_uri)
        .bind(&r.scope)
        .bind(&r.state)
        .bind(&r.code_challenge)
        .bind(&r.browser_hash)
        .bind(&r.csrf)
        .bind(&r.email)
        .bind(&r.code_hash)
        .bind(&r.link_hash)
        .bind(r.attempts)
        .bind(r.done)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

/// A request of the tenant, whatever its state (the caller checks expiry and `done`).
pub async fn find_request(db: &Db, tenant_id: &str, id: &str) -> StoreResult<Option<RequestRow>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM authorization_requests WHERE tenant_id = $1 AND id = $2"
    );
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(id).fetch_optional(pool).await?),
    )
}

/// The email step: records the address and the new code and link (replacing earlier ones),
/// while the request is open. Wrong codes count on: asking again gives no new guesses.
pub async fn set_email(
    db: &Db,
    id: &str,
    email: &str,
    code_hash: &[u8],
    link_hash: &[u8],
    now: i64,
) -> StoreResult<bool> {
    const SQL: &str = "UPDATE authorization_requests
        SET email = $2, code_hash = $3, link_hash = $4
        WHERE id = $1 AND done = FALSE AND expires_at > $5";
    let n = on_writer!(db, pool => sqlx::query(SQL).bind(id).bind(email).bind(code_hash).bind(link_hash).bind(now).execute(pool).await?.rows_affected());
    Ok(n == 1)
}

/// Counts a wrong code, and ends the request at the `max_attempts`th; returns the attempts
/// made so far (0 if the request is gone or done).
pub async fn record_wrong_code(db: &Db, id: &str, max_attempts: i64) -> StoreResult<i64> {
    const SQL: &str = "UPDATE authorization_requests
        SET attempts = attempts + 1, done = (attempts + 1 >= $2)
        WHERE id = $1 AND done = FALSE RETURNING attempts";
    let n: Option<i64> = on_writer!(db, pool => sqlx::query_scalar(SQL).bind(id).bind(max_attempts).fetch_optional(pool).await?);
    Ok(n.unwrap_or(0))
}

/// Which mailed secret finishes a request.
#[derive(Debug, Clone, Copy)]
pub enum Proof {
    Code,
    Link,
}

/// Completes the request if it is still open and `hash` is still its newest code (or link):
/// exactly one of concurrent callers gets `true`, and a code replaced meanwhile finishes
/// nothing.
pub async fn finish_request(
    db: &Db,
    id: &str,
    proof: Proof,
    hash: &[u8],
    now: i64,
) -> StoreResult<bool> {
    let sql = match proof {
        Proof::Code => {
            "UPDATE authorization_requests SET done = TRUE
            WHERE id = $1 AND done = FALSE AND code_hash = $2 AND expires_at > $3 RETURNING id"
        }
        Proof::Link => {
            "UPDATE authorization_requests SET done = TRUE
            WHERE id = $1 AND done = FALSE AND link_hash = $2 AND expires_at > $3 RETURNING id"
        }
    };
    let row: Option<String> = on_writer!(db, pool => sqlx::query_scalar(sql).bind(id).bind(hash).bind(now).fetch_optional(pool).await?);
    Ok(row.is_some())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRow {
    pub code_hash: Vec<u8>,
    pub tenant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub user_id: String,
    pub scope: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used: bool,
    pub reused: bool,
    pub family_id: Option<String>,
    pub access_jti: Option<String>,
    pub access_exp: Option<i64>,
}

const CODE_COLUMNS: &str = "code_hash, tenant_id, client_id, redirect_uri, code_challenge,
    user_id, scope, created_at, expires_at, used, reused, family_id, access_jti, access_exp";

pub async fn insert_code(db: &Db, c: &CodeRow) -> StoreResult<()> {
    const SQL: &str = "INSERT INTO authorization_codes
        (code_hash, tenant_id, client_id, redirect_uri, code_challenge, user_id, scope, created_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    on_writer!(db, pool => sqlx::query(SQL)
        .bind(&c.code_hash)
        .bind(&c.tenant_id)
        .bind(&c.client_id)
        .bind(&c.redirect_uri)
        .bind(&c.code_challenge)
        .bind(&c.user_id)
        .bind(&c.scope)
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

/// The code with this hash, whatever its state (read when a redemption was refused, to say why).
pub async fn find_code(db: &Db, tenant_id: &str, hash: &[u8]) -> StoreResult<Option<CodeRow>> {
    let sql = format!(
        "SELECT {CODE_COLUMNS} FROM authorization_codes WHERE tenant_id = $1 AND code_hash = $2"
    );
    Ok(
        on_pool!(db, pool => sqlx::query_as(&sql).bind(tenant_id).bind(hash).fetch_optional(pool).await?),
    )
}

/// What a redemption presents, and what it will issue.
pub struct Redemption<'a> {
    pub tenant_id: &'a str,
    pub code_hash: &'a [u8],
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// The S256 challenge computed from the presented verifier.
    pub code_challenge: &'a str,
    pub family_id: &'a str,
    pub access_jti: &'a str,
    pub access_exp: i64,
    pub now: i64,
}

/// Uses the code up if it is unused, unexpired, and bound to what is presented (client,
/// redirect URI, PKCE challenge), recording what its redemption issues: one statement, so of
/// concurrent callers exactly one gets the code's `(user_id, scope)`.
pub async fn take_code(db: &Db, r: &Redemption<'_>) -> StoreResult<Option<(String, String)>> {
    const SQL: &str = "UPDATE authorization_codes
        SET used = TRUE, family_id = $6, access_jti = $7, access_exp = $8
        WHERE tenant_id = $1 AND code_hash = $2 AND client_id = $3 AND redirect_uri = $4
          AND code_challenge = $5 AND used = FALSE AND expires_at > $9
        RETURNING user_id, scope";
    Ok(on_writer!(db, pool => sqlx::query_as(SQL)
        .bind(r.tenant_id).bind(r.code_hash).bind(r.client_id).bind(r.redirect_uri)
        .bind(r.code_challenge).bind(r.family_id).bind(r.access_jti).bind(r.access_exp).bind(r.now)
        .fetch_optional(pool).await?))
}

/// Marks a used code as presented again; its first redemption's refresh token, if not stored
/// yet, will not be (see [`super::refresh_tokens::insert_unless_code_reused`]).
pub async fn mark_reused(db: &Db, hash: &[u8]) -> StoreResult<()> {
    const SQL: &str =
        "UPDATE authorization_codes SET reused = TRUE WHERE code_hash = $1 AND used = TRUE";
    on_writer!(db, pool => sqlx::query(SQL).bind(hash).execute(pool).await?.rows_affected());
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub token_hash: Vec<u8>,
    pub tenant_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

pub async fn insert_session(db: &Db, s: &SessionRow) -> StoreResult<()> {
    const SQL: &str =
        "INSERT INTO web_sessions (token_hash, tenant_id, user_id, created_at, expires_at)
        VALUES ($1, $2, $3, $4, $5)";
    on_writer!(db, pool => sqlx::query(SQL)
        .bind(&s.token_hash)
        .bind(&s.tenant_id)
        .bind(&s.user_id)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

/// The tenant's unexpired session with this cookie.
pub async fn find_session(
    db: &Db,
    tenant_id: &str,
    hash: &[u8],
    now: i64,
) -> StoreResult<Option<SessionRow>> {
    const SQL: &str = "SELECT token_hash, tenant_id, user_id, created_at, expires_at
        FROM web_sessions WHERE tenant_id = $1 AND token_hash = $2 AND expires_at > $3";
    Ok(
        on_pool!(db, pool => sqlx::query_as(SQL).bind(tenant_id).bind(hash).bind(now).fetch_optional(pool).await?),
    )
}

pub async fn delete_session(db: &Db, tenant_id: &str, hash: &[u8]) -> StoreResult<()> {
    const SQL: &str = "DELETE FROM web_sessions WHERE tenant_id = $1 AND token_hash = $2";
    on_writer!(db, pool => sqlx::query(SQL).bind(tenant_id).bind(hash).execute(pool).await?.rows_affected());
    Ok(())
}

/// Forgets requests, codes and sessions that expired before `before`.
pub async fn prune(db: &Db, before: i64) -> StoreResult<u64> {
    let mut n = 0;
    for sql in [
        "DELETE FROM authorization_requests WHERE expires_at < $1",
        "DELETE FROM authorization_codes WHERE expires_at < $1",
        "DELETE FROM web_sessions WHERE expires_at < $1",
    ] {
        n += on_writer!(db, pool => sqlx::query(sql).bind(before).execute(pool).await?.rows_affected());
    }
    Ok(n)
}
