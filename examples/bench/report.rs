//! The table every figure ends in: one row a figure, with lanyard's value, the reference
//! measured in the same run, their ratio, the target and whether it was met.

/// One line of the table.
pub struct Row {
    figure: String,
    value: String,
    reference: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

pub fn row(
    figure: &str,
    value: String,
    reference: String,
    ratio: Option<f64>,
    target: &str,
    met: Option<bool>,
) -> Row {
    Row {
        figure: figure.into(),
        value,
        reference,
        ratio: ratio
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "—".into()),
        target: target.into(),
        met,
    }
}

/// A figure that must reach at least `min` times its reference.
pub fn at_least(
    figure: &str,
    value: String,
    reference: String,
    ours: f64,
    theirs: f64,
    min: f64,
) -> Row {
    row(
        figure,
        value,
        reference,
        Some(ours / theirs.max(1e-9)),
        &if (min * 10.0).fract() == 0.0 {
            format!("≥ {min:.1}×")
        } else {
            format!("≥ {min:.2}×")
        },
        Some(ours >= min * theirs),
    )
}

/// Prints `rows` on stdout as a Markdown table.
pub fn print_table(rows: &[Row]) {
    println!("| figure | lanyard | reference in the same run | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.figure, r.value, r.reference, r.ratio, r.target, met
        );
    }
}

/// How many of `rows` have no figure: a value that is not a number, or a rate of nothing.
pub fn missing(rows: &[Row]) -> usize {
    rows.iter()
        .filter(|r| r.value.contains("NaN") || r.value.starts_with("0/s"))
        .count()
}
