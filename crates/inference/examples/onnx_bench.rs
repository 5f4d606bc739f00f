//! Per-call latency of the project's ONNX path: `onnx_bench <model.onnx> <batch> [calls]`
//! prints `p50_us p99_us` for `calls` calls of `batch` rows of random features, one thread.
//! bench/onnx_vs_onnxruntime.py runs it next to ONNX Runtime on the same models.

use std::time::Instant;

use flywheel_inference::OnnxModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: onnx_bench <model.onnx> <batch> [calls]")?;
    let batch: usize = args.next().ok_or("batch size missing")?.parse()?;
    let calls: usize = args.next().map_or(Ok(2000), |c| c.parse())?;
    let model = OnnxModel::load(&std::fs::read(path)?)?;
    // A fixed pseudo-random input (xorshift), standard-normal-ish values.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<f32> = (0..batch * model.width())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f32 / 2_500.0 - 2.0
        })
        .collect();
    for _ in 0..calls / 10 + 1 {
        model.run(batch, data.clone())?;
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let input = data.clone();
        let started = Instant::now();
        std::hint::black_box(model.run(batch, input)?);
        times.push(started.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
    println!("{p50:.2} {p99:.2}");
    Ok(())
}
