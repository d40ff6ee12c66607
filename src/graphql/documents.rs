//! Parsed queries, remembered: an app sends the same few operations again and again (with
//! other variables), and parsing one costs more than copying its parsed form. Validation still
//! runs on every request, against its own variables.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::Request;
use async_graphql::parser::{parse_query, types::ExecutableDocument};

/// At most this many documents are remembered; when full, all are forgotten.
const CAPACITY: usize = 256;
/// Longer queries are parsed every time.
const MAX_QUERY_BYTES: usize = 8 * 1024;

#[derive(Default)]
pub struct Documents {
    parsed: Mutex<HashMap<String, ExecutableDocument>>,
}

impl Documents {
    /// Gives `request` its parsed query, from memory or parsed now. A query that does not parse
    /// is left to the engine, which answers with the syntax error.
    pub fn prepare(&self, request: &mut Request) {
        if request.query.len() > MAX_QUERY_BYTES {
            return;
        }
        let known = self
            .parsed
            .lock()
            .expect("documents lock")
            .get(&request.query)
            .cloned();
        let document = match known {
            Some(document) => document,
            None => {
                let Ok(document) = parse_query(&request.query) else {
                    return;
                };
                let mut parsed = self.parsed.lock().expect("documents lock");
                if parsed.len() >= CAPACITY {
                    parsed.clear();
                }
                parsed.insert(request.query.clone(), document.clone());
                document
            }
        };
        request.set_parsed_query(document);
    }
}
