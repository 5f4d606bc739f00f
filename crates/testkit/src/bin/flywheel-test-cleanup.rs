//! Deletes the JetStream streams that test runs left on the shared NATS server (names made by
//! `unique_name()`: `T` + 20 hex digits + `_EVENTS|_JOBS|_PREDICTIONS|_DLQ`). `scripts/test.sh`
//! runs it before the tests, so a long-lived machine does not accumulate them. Streams younger
//! than an hour are left alone, in case another test run is using them.

use futures::TryStreamExt;

/// Whether `name` is a test stream created more than an hour ago. The first 8 hex digits of the
/// prefix are the low 32 bits of the UUIDv7 millisecond timestamp (see `unique_name`).
fn is_stale_test_stream(name: &str, now_ms: u64) -> bool {
    let Some((prefix, kind)) = name.split_once('_') else {
        return false;
    };
    let shaped = prefix.len() == 21
        && prefix.starts_with('T')
        && prefix[1..].bytes().all(|b| b.is_ascii_hexdigit())
        && matches!(kind, "EVENTS" | "JOBS" | "PREDICTIONS" | "DLQ");
    if !shaped {
        return false;
    }
    let Ok(low32) = u32::from_str_radix(&prefix[1..9], 16).map(u64::from) else {
        return false;
    };
    let age_ms = (now_ms.wrapping_sub(low32)) & 0xffff_ffff;
    age_ms > 3_600_000
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = flywheel_testkit::nats_url();
    let client = async_nats::connect(&url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let names: Vec<String> = jetstream.stream_names().try_collect().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let mut deleted = 0;
    for name in names.iter().filter(|n| is_stale_test_stream(n, now_ms)) {
        if jetstream.delete_stream(name).await.is_ok() {
            deleted += 1;
        }
    }
    println!(
        "deleted {deleted} leftover test streams of {} on {url}",
        names.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_stale_test_stream;

    #[test]
    fn only_old_test_streams_are_stale() {
        let now_ms = 0x1_2345_6789_u64 + 7_200_000;
        assert!(
            is_stale_test_stream("T23456789aaaaaaaaaaaa_EVENTS", now_ms),
            "two hours old"
        );
        assert!(
            !is_stale_test_stream("T23456789aaaaaaaaaaaa_EVENTS", 0x1_2345_6789 + 60_000),
            "a minute old"
        );
        for other in [
            "FLYWHEEL_EVENTS",
            "SQ2_EVENTS",
            "T23456789aaaaaaaaaaaa_OTHER",
            "X23456789aaaaaaaaaaaa_DLQ",
            "T2345678",
        ] {
            assert!(!is_stale_test_stream(other, now_ms), "{other}");
        }
    }
}
