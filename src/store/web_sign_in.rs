//! Sign-in on the web (SPEC §9): the authorization requests the hosted page works on, the
//! authorization codes the token endpoint redeems, and browsers' sign-in sessions.
//!
//! Every one-time thing is consumed by one conditional `UPDATE … RETURNING` that also checks
//! what is presented: of concurrent redemptions of a code, or of a mailed code or link, exactly
//! one gets the row.

use tokio::sync::{mpsc, oneshot};

use super::{Db, StoreError, StoreResult, in_transaction, on_pool, on_writer};

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
    pub family_id: Option<String>,
    pub access_jti: Option<String>,
    pub access_exp: Option<i64>,
}

const CODE_COLUMNS: &str = "code_hash, tenant_id, client_id, redirect_uri, code_challenge,
    user_id, scope, created_at, expires_at, used, family_id, access_jti, access_exp";

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
#[derive(Debug, Clone)]
pub struct Redemption {
    pub tenant_id: String,
    pub code_hash: Vec<u8>,
    pub client_id: String,
    pub redirect_uri: String,
    /// The S256 challenge computed from the presented verifier.
    pub code_challenge: String,
    /// The sign-in's refresh-token family and access token, recorded on the code.
    pub family_id: String,
    pub access_jti: String,
    pub access_exp: i64,
    pub now: i64,
    /// The refresh token's hash and expiry, for a client allowed the refresh grant.
    pub refresh: Option<(Vec<u8>, i64)>,
}

/// A code used up: whose it was and its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub user_id: String,
    pub scope: String,
}

/// Most redemptions written together.
const MAX_REDEMPTIONS: usize = 64;

/// A redemption that waited longer than this for its write is refused unwritten: its client
/// has given up, and a code used up for nobody would make the client's retry a second use.
const MAX_QUEUED: std::time::Duration = std::time::Duration::from_secs(5);

struct Job {
    redemption: Redemption,
    queued: std::time::Instant,
    done: oneshot::Sender<StoreResult<Option<Taken>>>,
}

/// Group commit of code redemptions: redemptions that arrive while one write runs go into the
/// next together, as one `UPDATE … FROM (VALUES …)` that checks and uses their codes up and one
/// insert of their refresh tokens, in one transaction. Each code is taken only if unused,
/// unexpired, and bound to what is presented (client, redirect URI, PKCE challenge); of
/// redemptions of one code, in one write or not, exactly one gets it. A code's refresh token
/// commits with its use, so a second use that revokes the sign-in always finds it.
pub struct Redeemer {
    queue: mpsc::UnboundedSender<Job>,
}

impl Redeemer {
    /// Starts the writing task on the current Tokio runtime; it ends when `Redeemer` is dropped.
    pub fn start(db: Db) -> Redeemer {
        let (queue, mut arrived) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            let mut batch: Vec<Job> = Vec::new();
            while arrived.recv_many(&mut batch, MAX_REDEMPTIONS).await > 0 {
                // Nobody waits for these any more, or not for long enough: leave their codes.
                batch.retain(|job| {
                    if job.done.is_closed() {
                        return false;
                    }
                    job.queued.elapsed() < MAX_QUEUED
                });
                if batch.is_empty() {
                    continue;
                }
                // Codes locked in one order on every node: two writes never wait on each other.
                batch.sort_by(|a, b| a.redemption.code_hash.cmp(&b.redemption.code_hash));
                let redemptions: Vec<&Redemption> = batch.iter().map(|j| &j.redemption).collect();
                let written = take_codes(&db, &redemptions).await;
                drop(redemptions);
                match written {
                    Ok(taken) => {
                        for (job, t) in batch.drain(..).zip(taken) {
                            let _ = job.done.send(Ok(t));
                        }
                    }
                    // The database failed the write, not a row of it: each redemption is refused
                    // (its client may retry: nothing was used up).
                    Err(e) => {
                        let cause = e.to_string();
                        for job in batch.drain(..) {
                            let _ =
                                job.done
                                    .send(Err(StoreError::Database(sqlx::Error::Protocol(
                                        cause.clone(),
                                    ))));
                        }
                    }
                }
            }
        });
        Redeemer { queue }
    }

    /// Uses the code up (see [`Redeemer`]); `None` when it was not taken.
    pub async fn redeem(&self, redemption: Redemption) -> StoreResult<Option<Taken>> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Job {
                redemption,
                queued: std::time::Instant::now(),
                done,
            })
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        // Dropped unwritten (waited too long): refused, the code left as it was.
        answer
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
    }
}

/// The batch's statement: its codes as a table of values (PostgreSQL types each value; SQLite
/// names the columns `column1`…, as PostgreSQL does). RETURNING names the family each code now
/// records, which tells the redemptions of one code apart.
fn take_sql(postgres: bool, n: usize) -> String {
    let row = |i: usize| {
        let p = |k: usize, ty: &str| {
            if postgres {
                format!("${}::{ty}", i * 9 + k)
            } else {
                format!("${}", i * 9 + k)
            }
        };
        format!(
            "({}, {}, {}, {}, {}, {}, {}, {}, {})",
            p(1, "bytea"),
            p(2, "text"),
            p(3, "text"),
            p(4, "text"),
            p(5, "text"),
            p(6, "text"),
            p(7, "text"),
            p(8, "bigint"),
            p(9, "bigint")
        )
    };
    let values: Vec<String> = (0..n).map(row).collect();
    // The codes by their key, so that each is found through the primary key rather than by a
    // scan joined to the values.
    let keys: Vec<String> = (0..n)
        .map(|i| {
            if postgres {
                format!("${}::bytea", i * 9 + 1)
            } else {
                format!("${}", i * 9 + 1)
            }
        })
        .collect();
    format!(
        "UPDATE authorization_codes
         SET used = TRUE, family_id = v.column6, access_jti = v.column7, access_exp = v.column8
         FROM (VALUES {}) AS v
         WHERE authorization_codes.code_hash IN ({})
           AND authorization_codes.code_hash = v.column1 AND authorization_codes.tenant_id = v.column2
           AND authorization_codes.client_id = v.column3 AND authorization_codes.redirect_uri = v.column4
           AND authorization_codes.code_challenge = v.column5 AND authorization_codes.used = FALSE
           AND authorization_codes.expires_at > v.column9
         RETURNING authorization_codes.family_id, authorization_codes.user_id, authorization_codes.scope",
        values.join(", "),
        keys.join(", ")
    )
}

/// One write of redemptions (what [`Redeemer`] runs for a batch): which were taken, in order.
pub async fn take_codes(db: &Db, batch: &[&Redemption]) -> StoreResult<Vec<Option<Taken>>> {
    let postgres = matches!(db, Db::Postgres { .. });
    let sql = take_sql(postgres, batch.len());
    let taken = in_transaction!(db, tx => {
        let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
        for r in batch {
            q = q
                .bind(&r.code_hash)
                .bind(&r.tenant_id)
                .bind(&r.client_id)
                .bind(&r.redirect_uri)
                .bind(&r.code_challenge)
                .bind(&r.family_id)
                .bind(&r.access_jti)
                .bind(r.access_exp)
                .bind(r.now);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let taken: Vec<Option<Taken>> = batch
            .iter()
            .map(|r| {
                rows.iter()
                    .find(|(family, _, _)| *family == r.family_id)
                    .map(|(_, user_id, scope)| Taken { user_id: user_id.clone(), scope: scope.clone() })
            })
            .collect();
        let refreshes: Vec<_> = batch
            .iter()
            .zip(&taken)
            .filter_map(|(r, t)| Some((*r, t.as_ref()?, r.refresh.as_ref()?)))
            .collect();
        if !refreshes.is_empty() {
            let values: Vec<String> = (0..refreshes.len())
                .map(|i| {
                    let b = i * 8;
                    format!("(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8)
                })
                .collect();
            let insert = format!(
                "INSERT INTO refresh_tokens
                 (token_hash, family_id, tenant_id, user_id, client_id, scope, created_at, expires_at)
                 VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(&insert);
            for (r, t, (hash, expires_at)) in &refreshes {
                q = q
                    .bind(hash)
                    .bind(&r.family_id)
                    .bind(&r.tenant_id)
                    .bind(&t.user_id)
                    .bind(&r.client_id)
                    .bind(&t.scope)
                    .bind(r.now)
                    .bind(*expires_at);
            }
            q.execute(&mut *tx).await?;
        }
        taken
    });
    Ok(taken)
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
