//! Profiles of the committed fixture, read as CSV and as Parquet, against numpy's numbers
//! (`tests/reference/make_reference.py` made them).

use std::path::PathBuf;

use bytes::Bytes;
use flywheel_data::{Expectation, Format, profile, read, validate};
use serde_json::Value;

fn reference(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(name)
}

fn close(actual: f64, expected: f64, what: &str) {
    let scale = actual.abs().max(expected.abs()).max(1e-300);
    assert!(
        (actual - expected).abs() <= 1e-9 * scale,
        "{what}: {actual} vs numpy {expected}"
    );
}

fn check_against_numpy(format: Format, file: &str) -> anyhow::Result<()> {
    let table = read(Bytes::from(std::fs::read(reference(file))?), format)?;
    let profile = profile(&table);
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(reference(
        "expected_profile.json",
    ))?)?;
    assert_eq!(
        profile.row_count,
        expected["row_count"].as_u64().expect("rows")
    );
    for column in expected["columns"].as_array().expect("columns") {
        let name = column["name"].as_str().expect("name");
        let actual = profile
            .column(name)
            .unwrap_or_else(|| panic!("{file}: no column {name}"));
        assert_eq!(
            actual.data_type,
            column["data_type"].as_str().expect("type"),
            "{file} {name} type"
        );
        assert_eq!(
            actual.count,
            column["count"].as_u64().expect("count"),
            "{file} {name} count"
        );
        assert_eq!(
            actual.nulls,
            column["nulls"].as_u64().expect("nulls"),
            "{file} {name} nulls"
        );
        assert_eq!(
            actual.distinct,
            column["distinct"].as_u64(),
            "{file} {name} distinct"
        );
        if let Some(numeric) = &actual.numeric {
            close(
                numeric.min,
                column["min"].as_f64().expect("min"),
                &format!("{name} min"),
            );
            close(
                numeric.max,
                column["max"].as_f64().expect("max"),
                &format!("{name} max"),
            );
            close(
                numeric.mean,
                column["mean"].as_f64().expect("mean"),
                &format!("{name} mean"),
            );
            close(
                numeric.std,
                column["std"].as_f64().expect("std"),
                &format!("{name} std"),
            );
            for ((level, value), reference) in numeric
                .quantiles
                .iter()
                .zip(column["quantiles"].as_array().expect("q"))
            {
                close(
                    *level,
                    reference[0].as_f64().expect("level"),
                    "quantile level",
                );
                close(
                    *value,
                    reference[1].as_f64().expect("value"),
                    &format!("{name} q{level}"),
                );
            }
            for (edge, reference) in numeric
                .histogram
                .edges
                .iter()
                .zip(column["edges"].as_array().expect("edges"))
            {
                close(
                    *edge,
                    reference.as_f64().expect("edge"),
                    &format!("{name} edge"),
                );
            }
            let counts: Vec<u64> = column["counts"]
                .as_array()
                .expect("counts")
                .iter()
                .filter_map(Value::as_u64)
                .collect();
            assert_eq!(numeric.histogram.counts, counts, "{file} {name} histogram");
        } else {
            let top = &actual.categorical.as_ref().expect("categorical").top;
            let reference: Vec<(String, u64)> = column["top"]
                .as_array()
                .expect("top")
                .iter()
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap_or_default().to_owned(),
                        pair[1].as_u64().unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(top, &reference, "{file} {name} top-k");
        }
    }
    Ok(())
}

#[test]
fn csv_profile_matches_numpy() -> anyhow::Result<()> {
    check_against_numpy(Format::Csv, "customers.csv")
}

#[test]
fn parquet_profile_matches_numpy() -> anyhow::Result<()> {
    check_against_numpy(Format::Parquet, "customers.parquet")
}

#[test]
fn expectations_name_failures_and_offending_values() -> anyhow::Result<()> {
    let table = read(
        Bytes::from(std::fs::read(reference("customers.csv"))?),
        Format::Csv,
    )?;
    let profile = profile(&table);
    let suite: Vec<Expectation> = serde_json::from_value(serde_json::json!([
        {"type": "column_exists", "column": "age", "data_type": "int"},
        {"type": "column_exists", "column": "email"},
        {"type": "not_null_ratio", "column": "age", "min": 0.99},
        {"type": "value_range", "column": "age", "min": 18, "max": 65},
        {"type": "allowed_values", "column": "plan", "values": ["basic", "pro", "trial"]},
        {"type": "unique", "column": "id"},
        {"type": "unique", "column": "plan"},
        {"type": "row_count", "min": 10, "max": 100000},
        {"type": "schema_unchanged"}
    ]))?;
    let mut previous = table.columns();
    previous.retain(|c| c.name != "tenure");
    previous.push(flywheel_data::ColumnSchema {
        name: "region".into(),
        data_type: "string".into(),
        nullable: false,
    });
    let outcomes = validate(&table, &profile, &suite, Some(&previous));
    let by_name = |n: &str| {
        outcomes
            .iter()
            .find(|o| o.expectation == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert!(by_name("column_exists(age)").passed);
    assert!(!by_name("column_exists(email)").passed);
    let nulls = by_name("not_null_ratio(age)");
    assert!(
        !nulls.passed && nulls.message.contains("nulls of 1000"),
        "{}",
        nulls.message
    );
    let range = by_name("value_range(age)");
    assert!(
        !range.passed
            && range.message.contains("outside [18, 65]")
            && range.message.contains("to 90"),
        "{}",
        range.message
    );
    let plans = by_name("allowed_values(plan)");
    assert!(
        !plans.passed && plans.message.contains("'enterprise'"),
        "{}",
        plans.message
    );
    assert!(by_name("unique(id)").passed);
    let dup = by_name("unique(plan)");
    assert!(
        !dup.passed && dup.message.contains("4 values occur more than once"),
        "{}",
        dup.message
    );
    assert!(by_name("row_count").passed);
    let schema = by_name("schema_unchanged");
    assert!(
        !schema.passed
            && schema.message.contains("removed `region`")
            && schema.message.contains("added `tenure`"),
        "{}",
        schema.message
    );
    Ok(())
}

#[test]
fn malformed_files_are_errors_not_panics() {
    for (bytes, format) in [
        (&b"PAR1 not really"[..], Format::Parquet),
        (&b"a,b\n1,2,3\n"[..], Format::Csv),
        (&[0xff, 0xfe, 0x00][..], Format::Csv),
        (&b""[..], Format::Csv),
    ] {
        assert!(
            read(Bytes::copy_from_slice(bytes), format).is_err(),
            "{bytes:?}"
        );
    }
    assert!(
        serde_json::from_value::<Expectation>(
            serde_json::json!({"type": "value_rnage", "column": "a"})
        )
        .is_err()
    );
    assert_eq!(
        Format::detect(Some("data.parquet"), b"").ok(),
        Some(Format::Parquet)
    );
    assert_eq!(
        Format::detect(None, b"PAR1....").ok(),
        Some(Format::Parquet)
    );
    assert_eq!(
        Format::detect(Some("text/csv"), b"PAR1").ok(),
        Some(Format::Csv)
    );
    assert!(Format::detect(Some("image/png"), b"").is_err());
}
