//! Parsed queries, checked and remembered.
//!
//! Before the engine validates a document, its cost is bounded here (SPEC §7): validation walks
//! every use of a fragment, so a few bytes that spread a fragment twice, whose fragment spreads
//! the next twice, and so on, would make it walk 2^N selections. This module measures each
//! fragment once and counts it once per use, so a document's *expanded* size is known in time
//! linear in its text, and a document that would expand past the limits is refused before the
//! engine sees it. Text nested deeper than the parser can safely recurse is refused before it is
//! parsed at all.
//!
//! An app sends the same few operations again and again (with other variables), and parsing one
//! costs more than copying its parsed form, so checked documents are remembered. Validation still
//! runs on every request, against its own variables.

use std::collections::HashMap;
use std::sync::Mutex;

use async_graphql::Request;
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::parser::{Positioned, parse_query};

/// At most this many documents are remembered; when full, all are forgotten.
const CAPACITY: usize = 256;
/// Longer queries are parsed every time.
const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Brackets (`{`, `[`, `(`) nested deeper than this are refused before parsing: the parser
/// recurses once per level.
pub const MAX_NESTING: usize = 64;
/// Fragments spreading fragments deeper than this are refused.
pub const MAX_FRAGMENT_NESTING: usize = 32;
/// Fields, fragment spreads and inline fragments of every operation of a document, each
/// fragment counted once per use: what validation will walk.
pub const MAX_EXPANDED_SELECTIONS: u64 = 500;
/// The fields whose resolvers mint a local API token.
const MINT_FIELDS: [&str; 2] = ["createLocalApiToken", "createPermanentLocalApiToken"];
/// The fields whose resolvers read a whole list from the database.
const LIST_FIELDS: [&str; 6] = [
    "localApiTokens",
    "systems",
    "auditEvents",
    "shares",
    "sharesReceived",
    "applicationAccess",
];

/// What a checked document costs, each fragment counted once per use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Fields, spreads and inline fragments, as validation walks them.
    pub selections: u64,
    /// Fields that mint a local API token.
    pub mints: u64,
    /// Fields that read a whole list (a system's tokens, the tenant's systems).
    pub lists: u64,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            selections: self.selections.saturating_add(other.selections),
            mints: self.mints.saturating_add(other.mints),
            lists: self.lists.saturating_add(other.lists),
        }
    }
}

/// Why a document is refused before validation; the message is the caller's to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

#[derive(Default)]
pub struct Documents {
    checked: Mutex<HashMap<String, (ExecutableDocument, Cost)>>,
}

impl Documents {
    /// The request's document and cost if it was checked before: the cheap path, taken inline.
    pub fn remembered(&self, request: &mut Request) -> Option<Cost> {
        let known = self
            .checked
            .lock()
            .expect("documents lock")
            .get(&request.query)
            .cloned();
        known.map(|(document, cost)| {
            request.set_parsed_query(document);
            cost
        })
    }

    /// Parses and measures the request's query, gives the request its parsed form and returns
    /// its cost. Linear in the query's length; call it off the reactor. A query that does not
    /// parse is refused with the parser's message, so nobody parses it again.
    pub fn check(&self, request: &mut Request) -> Result<Cost, Refused> {
        if let Some(cost) = self.remembered(request) {
            return Ok(cost);
        }
        let depth = nesting(&request.query);
        if depth > MAX_NESTING {
            return Err(Refused(format!(
                "the query nests {depth} levels of brackets; at most {MAX_NESTING} are allowed"
            )));
        }
        let document = parse_query(&request.query)
            .map_err(|e| Refused(format!("the query does not parse: {e}")))?;
        let cost = measure(&document)?;
        if request.query.len() <= MAX_QUERY_BYTES {
            let mut checked = self.checked.lock().expect("documents lock");
            if checked.len() >= CAPACITY {
                checked.clear();
            }
            checked.insert(request.query.clone(), (document.clone(), cost));
        }
        request.set_parsed_query(document);
        Ok(cost)
    }
}

/// The deepest nesting of brackets outside strings and comments.
fn nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The expanded cost of every operation of `document`, each fragment measured once. Refuses
/// documents past the limits, fragments that spread themselves, fragments nested too deep and
/// fragments never used (which the GraphQL spec refuses too, and which validation would walk).
pub fn measure(document: &ExecutableDocument) -> Result<Cost, Refused> {
    let mut measure = Measure {
        document,
        fragments: HashMap::new(),
    };
    let mut total = Cost::default();
    for (_, operation) in document.operations.iter() {
        total = total.add(measure.selection_set(&operation.node.selection_set, 0)?);
        measure.within_limit(total)?;
    }
    if let Some(unused) = document
        .fragments
        .keys()
        .find(|name| !measure.fragments.contains_key(name.as_str()))
    {
        return Err(Refused(format!("fragment {unused} is never used")));
    }
    Ok(total)
}

struct Measure<'a> {
    document: &'a ExecutableDocument,
    /// A fragment's cost once measured; `None` while it is being measured (a cycle).
    fragments: HashMap<&'a str, Option<Cost>>,
}

impl<'a> Measure<'a> {
    fn within_limit(&self, cost: Cost) -> Result<(), Refused> {
        if cost.selections > MAX_EXPANDED_SELECTIONS {
            return Err(Refused(format!(
                "the query expands to more than {MAX_EXPANDED_SELECTIONS} selections once its fragments are spread; ask for less"
            )));
        }
        Ok(())
    }

    fn selection_set(
        &mut self,
        set: &'a Positioned<SelectionSet>,
        fragment_depth: usize,
    ) -> Result<Cost, Refused> {
        let mut cost = Cost::default();
        for item in &set.node.items {
            let one = match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    let own = Cost {
                        selections: 1,
                        mints: MINT_FIELDS.contains(&name) as u64,
                        lists: LIST_FIELDS.contains(&name) as u64,
                    };
                    own.add(self.selection_set(&field.selection_set, fragment_depth)?)
                }
                Selection::InlineFragment(inline) => Cost {
                    selections: 1,
                    ..Cost::default()
                }
                .add(self.selection_set(&inline.node.selection_set, fragment_depth)?),
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    Cost {
                        selections: 1,
                        ..Cost::default()
                    }
                    .add(self.fragment(name, fragment_depth + 1)?)
                }
            };
            cost = cost.add(one);
            self.within_limit(cost)?;
        }
        Ok(cost)
    }

    fn fragment(&mut self, name: &'a str, depth: usize) -> Result<Cost, Refused> {
        match self.fragments.get(name) {
            Some(Some(cost)) => return Ok(*cost),
            Some(None) => return Err(Refused(format!("fragment {name} spreads itself"))),
            None => {}
        }
        // An unknown fragment costs nothing here; validation names it.
        let Some((key, definition)) = self.document.fragments.get_key_value(name) else {
            return Ok(Cost::default());
        };
        if depth > MAX_FRAGMENT_NESTING {
            return Err(Refused(format!(
                "fragments nest more than {MAX_FRAGMENT_NESTING} deep"
            )));
        }
        self.fragments.insert(key.as_str(), None);
        let cost = self.selection_set(&definition.node.selection_set, depth)?;
        self.fragments.insert(key.as_str(), Some(cost));
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(query: &str) -> Result<Cost, Refused> {
        measure(&parse_query(query).expect("parses"))
    }

    /// `{ ...F0 }` where each fragment spreads the next twice: 2^n uses of the last.
    fn bomb(n: usize) -> String {
        let mut q = String::from("query { ...F0 }");
        for i in 0..n {
            q.push_str(&format!(
                " fragment F{i} on Query {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        q.push_str(&format!(" fragment F{n} on Query {{ __typename }}"));
        q
    }

    #[test]
    fn each_fragment_counts_once_per_use() {
        let c = cost("{ a ...F ...F } fragment F on Query { b c }").unwrap();
        // a, two spreads, and b c twice
        assert_eq!(c.selections, 7);
        let c = cost("mutation { ...M } fragment M on Mutation { x: createLocalApiToken(systemUuid: \"s\", duration: \"1D\") { uuid } y: createLocalApiToken(systemUuid: \"s\", duration: \"1D\") { uuid } }").unwrap();
        assert_eq!(c.mints, 2);
    }

    #[test]
    fn a_fragment_bomb_is_refused_without_walking_it() {
        // 2^30 uses: only counting, never walking, can answer this.
        let err = cost(&bomb(30)).unwrap_err();
        assert!(err.0.contains("expands"), "{err:?}");
        assert!(cost(&bomb(60)).is_err());
        assert!(cost(&bomb(7)).is_ok());
        assert!(cost(&bomb(8)).is_err());
    }

    #[test]
    fn cycles_deep_chains_and_unused_fragments_are_refused() {
        let err =
            cost("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }").unwrap_err();
        assert!(err.0.contains("spreads itself"), "{err:?}");
        let mut chain = String::from("{ ...F0 }");
        for i in 0..40 {
            chain.push_str(&format!(" fragment F{i} on Query {{ ...F{} }}", i + 1));
        }
        chain.push_str(" fragment F40 on Query { a }");
        assert!(cost(&chain).unwrap_err().0.contains("nest"));
        let err = cost("{ a } fragment U on Query { b }").unwrap_err();
        assert!(err.0.contains("never used"), "{err:?}");
    }

    #[test]
    fn nesting_is_counted_outside_strings_and_comments() {
        assert_eq!(nesting("{ a { b } }"), 2);
        assert_eq!(nesting("{ a(x: \"{{{{\") # {{{{\n }"), 2);
        assert_eq!(nesting("{ a(x: \"\"\"{{{ \\\"\"\" {{\"\"\") }"), 2);
        let deep = format!("{}{}", "{a".repeat(10_000), "}".repeat(10_000));
        assert_eq!(nesting(&deep), 10_000);
        let mut request = Request::new(deep);
        let refused = Documents::default().check(&mut request).unwrap_err();
        assert!(refused.0.contains("nests"), "{refused:?}");
    }
}
