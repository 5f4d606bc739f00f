//! Tabular data for Flywheel: reading CSV and Parquet, logical schemas, column profiles (the
//! monitor's reference distribution) and declarative validation expectations.
//!
//! Numbers follow the conventions users compare against: sample standard deviation (ddof = 1,
//! as pandas), quantiles with linear interpolation (numpy's default), histograms with equal
//! width bins whose last bin includes its right edge (numpy.histogram). `tests/reference/`
//! holds values computed with numpy and pyarrow, and the script that made them.

mod error;
mod expectations;
mod profile;
mod read;

pub use error::{DataError, Result};
pub use expectations::{Expectation, ExpectationOutcome, validate};
pub use profile::{
    BINS, CategoricalProfile, ColumnProfile, DISTINCT_CAP, Histogram, NumericProfile, Profile,
    QUANTILES, TOP_K, profile,
};
pub use read::{ColumnSchema, Format, Table, read};
