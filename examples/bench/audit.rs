//! Auditing every token issued: the token endpoint of lanyard with `audit.token_issuance` on
//! (each access token's event written before it is answered, many in one transaction) against
//! a second lanyard with it off, a second of each in turn, so both meet the same neighbours.

use std::time::Duration;

use crate::procs::Lanyard;
use crate::report::{Row, at_least};
use crate::tokens::token_endpoint;

pub async fn issuance(on: &Lanyard, off: &Lanyard, secs: u64) -> Row {
    let slice = Duration::from_secs(1);
    let (mut with, mut without) = (0.0, 0.0);
    for _ in 0..secs {
        with += token_endpoint(on, slice).await.0;
        without += token_endpoint(off, slice).await.0;
    }
    let (with, without) = (with / secs as f64, without / secs as f64);
    at_least(
        "client_credentials tokens/s, every token audited",
        format!("{with:.0}/s"),
        format!("auditing off {without:.0}/s"),
        with,
        without,
        0.9,
    )
}
