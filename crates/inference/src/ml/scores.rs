//! What happens to raw scores: ONNX post transforms (as ONNX Runtime computes them) and class
//! labels.

use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::attributes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    /// From the `post_transform` attribute.
    pub(crate) fn parse(s: Option<String>) -> TractResult<Self> {
        Ok(match s.as_deref() {
            None | Some("NONE") => PostTransform::None,
            Some("SOFTMAX") => PostTransform::Softmax,
            Some("LOGISTIC") => PostTransform::Logistic,
            Some("SOFTMAX_ZERO") => PostTransform::SoftmaxZero,
            Some("PROBIT") => PostTransform::Probit,
            Some(other) => bail!("unknown post_transform {other}"),
        })
    }

    /// Transforms one row of scores in place.
    pub(crate) fn apply(self, scores: &mut [f64]) {
        match self {
            PostTransform::None => {}
            PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
            PostTransform::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
            PostTransform::Softmax => softmax(scores, false),
            PostTransform::SoftmaxZero => softmax(scores, true),
        }
    }
}

/// 1 / (1 + e^-x).
pub(crate) fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// sqrt(2) * erfinv(2p - 1), as ONNX Runtime computes PROBIT.
pub(crate) fn probit(p: f64) -> f64 {
    let x = 2.0 * p - 1.0;
    // Giles' single-precision approximation of erfinv, refined by two Newton steps on erf.
    let w = -((1.0 - x) * (1.0 + x)).ln();
    let mut y = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p * x
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p * x
    };
    for _ in 0..2 {
        let err = erf(y) - x;
        y -= err / (2.0 / std::f64::consts::PI.sqrt() * (-y * y).exp());
    }
    std::f64::consts::SQRT_2 * y
}

/// erf by Abramowitz–Stegun 7.1.26 refined enough for probit's Newton steps.
fn erf(x: f64) -> f64 {
    // Series for small |x|, continued fraction complement otherwise; 1e-15 accurate.
    let ax = x.abs();
    let value = if ax < 2.5 {
        let mut sum = ax;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc continued fraction (Lentz).
        let mut f = ax;
        let mut c = ax;
        let mut d = 0.0;
        for k in 1..200 {
            let a = k as f64 / 2.0;
            d = ax + a * d;
            d = if d == 0.0 { 1e-300 } else { 1.0 / d };
            c = ax + a / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    };
    value.copysign(x)
}

fn softmax(scores: &mut [f64], keep_zeros: bool) {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for s in scores.iter_mut() {
        if keep_zeros && *s == 0.0 {
            continue;
        }
        *s = (*s - max).exp();
        total += *s;
    }
    if total > 0.0 {
        for s in scores.iter_mut() {
            if !(keep_zeros && *s == 0.0) {
                *s /= total;
            }
        }
    }
}

/// Class labels of a classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Labels {
    /// Integer classes.
    Ints(Vec<i64>),
    /// Named classes.
    Strings(Vec<String>),
}

impl Labels {
    /// Number of classes.
    pub(crate) fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    /// The label tensor's type.
    pub(crate) fn datum_type(&self) -> DatumType {
        match self {
            Labels::Ints(_) => DatumType::I64,
            Labels::Strings(_) => DatumType::String,
        }
    }

    /// The label tensor of the classes picked per row.
    pub(crate) fn pick(&self, winners: &[usize]) -> Tensor {
        match self {
            Labels::Ints(values) => {
                let picked: Vec<i64> = winners.iter().map(|&w| values[w]).collect();
                tensor1(&picked)
            }
            Labels::Strings(values) => {
                let picked: Vec<String> = winners.iter().map(|&w| values[w].clone()).collect();
                tensor1(&picked)
            }
        }
    }

    /// From `<prefix>int64s`/`<prefix>ints` or `<prefix>strings`: exactly one must be there.
    pub(crate) fn parse(node: &NodeProto, ints: &str, strings: &str) -> TractResult<Self> {
        match (
            attributes::ints(node, ints).filter(|v| !v.is_empty()),
            attributes::strings(node, strings)?.filter(|v| !v.is_empty()),
        ) {
            (Some(ints), None) => Ok(Labels::Ints(ints.to_vec())),
            (None, Some(strings)) => Ok(Labels::Strings(strings)),
            _ => bail!(
                "{}: needs exactly one of {ints} and {strings}",
                node.op_type
            ),
        }
    }

    /// The first class with the highest score (argmax as scikit-learn breaks ties).
    pub(crate) fn argmax(scores: &[f64]) -> usize {
        let mut best = 0;
        for (t, &s) in scores.iter().enumerate() {
            if s > scores[best] {
                best = t;
            }
        }
        best
    }
}

/// Type rules of a model's outputs over a `[rows, features]` input: with labels, a `[rows]`
/// label tensor then `[rows, columns]` f32 scores; without, the scores alone.
pub(crate) fn output_rules<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
    labels: Option<&Labels>,
    columns: usize,
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    s.equals(&inputs[0].rank, 2)?;
    let scores = match labels {
        Some(labels) => {
            check_output_arity(outputs, 2)?;
            s.equals(&outputs[0].datum_type, labels.datum_type())?;
            s.equals(&outputs[0].rank, 1)?;
            s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
            &outputs[1]
        }
        None => {
            check_output_arity(outputs, 1)?;
            &outputs[0]
        }
    };
    s.equals(&scores.datum_type, DatumType::F32)?;
    s.equals(&scores.rank, 2)?;
    s.equals(&scores.shape[0], &inputs[0].shape[0])?;
    s.equals(&scores.shape[1], columns.to_dim())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probit_inverts_the_normal_cdf() {
        // Φ⁻¹ at a few points (scipy.stats.norm.ppf).
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.1, -1.281_551_565_544_600_5),
            (0.999, 3.090_232_306_167_813_5),
        ] {
            assert!((probit(p) - z).abs() < 1e-9, "probit({p}) = {}", probit(p));
        }
    }

    #[test]
    fn softmax_zero_leaves_zeros() {
        let mut v = [0.0, 1.0, 2.0];
        softmax(&mut v, true);
        assert_eq!(v[0], 0.0);
        assert!((v[1] + v[2] - 1.0).abs() < 1e-12);
        assert!(v[2] > v[1]);
    }
}
