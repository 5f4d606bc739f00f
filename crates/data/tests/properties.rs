//! Property tests of the dataset parsers: any bytes uploaded as CSV or Parquet give a table or
//! an error, never a panic; numbers written as CSV read back exactly.

use bytes::Bytes;
use flywheel_data::{Format, read};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = read(Bytes::from(bytes.clone()), Format::Csv);
        let _ = read(Bytes::from(bytes), Format::Parquet);
    }

    #[test]
    fn csv_text_never_panics(text in "[a-z0-9,.\"\\- \n]{0,400}") {
        let _ = read(Bytes::from(text), Format::Csv);
    }

    #[test]
    fn numbers_round_trip_through_csv(values in proptest::collection::vec(-1e12f64..1e12, 1..200)) {
        let mut csv = String::from("x,label\n");
        for (i, v) in values.iter().enumerate() {
            csv.push_str(&format!("{v},{}\n", i % 2));
        }
        let table = read(Bytes::from(csv), Format::Csv);
        prop_assert!(table.is_ok());
        let column = table.ok().and_then(|t| t.f64_column("x").ok()).unwrap_or_default();
        let expected: Vec<Option<f64>> = values.iter().copied().map(Some).collect();
        prop_assert_eq!(column, expected);
    }
}
