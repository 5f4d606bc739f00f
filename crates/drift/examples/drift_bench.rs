//! Time for a full drift report on large samples: `drift_bench [rows] [columns]` (default
//! 1 000 000 reference × 1 000 000 current rows × 20 numeric columns, the current one shifted in
//! every other column), each column by Evidently's default method (normed Wasserstein for
//! numeric references over 1000 rows) and by KS (scipy's asymptotic p-value) and PSI.

use std::time::Instant;

use flywheel_drift::{Column, Method, column_drift};

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let columns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut normal = |shift: f64| {
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64).max(1e-300)
        };
        let (u, v) = (uniform(), uniform());
        shift + (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let started = Instant::now();
    let data: Vec<(Vec<f64>, Vec<f64>)> = (0..columns)
        .map(|c| {
            let shift = if c % 2 == 0 { 0.0 } else { 0.05 };
            (
                (0..rows).map(|_| normal(0.0)).collect(),
                (0..rows).map(|_| normal(shift)).collect(),
            )
        })
        .collect();
    println!(
        "generated {columns} columns × {rows} + {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for method in [None, Some(Method::Ks), Some(Method::Psi)] {
        let started = Instant::now();
        let mut drifted = 0;
        for (reference, current) in &data {
            let verdict = column_drift(
                &Column::Numeric(reference),
                &Column::Numeric(current),
                method,
                None,
            )
            .expect("drift");
            drifted += usize::from(verdict.drifted);
        }
        println!(
            "{:<28} {:>7.2} s for {columns} columns ({drifted} drifted)",
            method.map_or("default (Evidently's choice)", |m| m.name()),
            started.elapsed().as_secs_f64()
        );
    }
}
