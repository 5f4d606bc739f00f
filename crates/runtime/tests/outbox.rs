//! The outbox on PostgreSQL and SQLite against real JetStream: rolled-back changes publish
//! nothing, committed ones publish once, and a repeated publish after a crash is de-duplicated.

use flywheel_bus::StreamKind;
use flywheel_db::DbConfig;
use flywheel_events::payloads::TrainingJobCancelled;
use flywheel_events::{Envelope, Event};
use flywheel_runtime::outbox::{CreateOutbox, enqueue, publish_pending};
use sea_orm::{ConnectionTrait, TransactionTrait};

flywheel_db::migrator!(Migrator, "outboxtest", [CreateOutbox::new("outboxtest")]);

fn cancelled(job: &str) -> Envelope {
    Envelope::new(
        "test",
        "acme",
        Event::TrainingJobCancelled(TrainingJobCancelled {
            job_id: job.into(),
            reason: "test".into(),
        }),
    )
}

async fn suite(config: DbConfig) -> anyhow::Result<()> {
    let db = flywheel_db::connect(&config).await?;
    flywheel_db::migrate::<Migrator>(&db, "outboxtest").await?;
    let bus = flywheel_testkit::test_bus("outbox").await?;

    let rolled_back = cancelled("rolled-back");
    let txn = db.begin().await?;
    enqueue(&txn, "outboxtest", &bus, &rolled_back).await?;
    txn.rollback().await?;

    let committed = cancelled("committed");
    let txn = db.begin().await?;
    enqueue(&txn, "outboxtest", &bus, &committed).await?;
    txn.commit().await?;

    assert_eq!(
        publish_pending(&bus, &db, "outboxtest")
            .await
            .map_err(anyhow::Error::msg)?,
        1
    );
    assert_eq!(
        publish_pending(&bus, &db, "outboxtest")
            .await
            .map_err(anyhow::Error::msg)?,
        0,
        "published rows are not sent again"
    );

    // A crash between publishing and marking the row: the row goes out again, JetStream drops it.
    db.execute_unprepared("UPDATE outboxtest_outbox SET published = false")
        .await?;
    assert_eq!(
        publish_pending(&bus, &db, "outboxtest")
            .await
            .map_err(anyhow::Error::msg)?,
        1
    );

    let mut stream = bus
        .jetstream()
        .get_stream(bus.subjects().stream(StreamKind::Events))
        .await?;
    let state = stream.info().await?.state.clone();
    assert_eq!(state.messages, 1, "exactly the committed event, once");
    let message = stream.get_raw_message(state.last_sequence).await?;
    let decoded = flywheel_events::decode_with_header(
        &message.payload,
        message.headers.get("Content-Type").map(|v| v.as_str()),
    )?;
    assert_eq!(decoded, committed);
    assert_eq!(
        message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned()),
        Some(committed.id.to_string())
    );
    flywheel_testkit::cleanup_bus(&bus).await;
    Ok(())
}

#[tokio::test]
async fn outbox_on_postgres() -> anyhow::Result<()> {
    suite(flywheel_testkit::fresh_postgres().await?).await
}

#[tokio::test]
async fn outbox_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    suite(flywheel_testkit::fresh_sqlite(dir.path())).await
}
