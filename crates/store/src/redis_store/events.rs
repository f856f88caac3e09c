//! The security event stream in Redis: one capped stream (`XADD ... MAXLEN ~`) with a TTL,
//! read newest first.

use async_trait::async_trait;

use super::RedisStore;
use crate::{EventLog, RecordedEvent, SecurityEvent, StoreError};

/// The stream keeps about this many events (`MAXLEN ~`)...
const STREAM_EVENTS: usize = 10_000;
/// ...and disappears after this long without one, like every other key.
const STREAM_TTL_MS: u64 = 7 * 24 * 3_600_000;

#[async_trait]
impl EventLog for RedisStore {
    async fn append(&self, event: &SecurityEvent) -> Result<(), StoreError> {
        let payload = serde_json::to_string(event)
            .map_err(|e| StoreError::Protocol(format!("encoding an event: {e}")))?;
        let key = self.keyspace.single("events");
        let kind = event.kind.as_str();
        self.calls
            .call("appending an event", |mut conn| async move {
                // One round trip: the entry, then the stream's TTL.
                redis::pipe()
                    .cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(STREAM_EVENTS)
                    .arg("*")
                    .arg("kind")
                    .arg(kind)
                    .arg("event")
                    .arg(payload)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(STREAM_TTL_MS)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    async fn recent(&self, count: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        let key = self.keyspace.single("events");
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .calls
            .call("reading events", |mut conn| async move {
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(entries
            .iter()
            .filter_map(|(id, fields)| {
                // A stream id is `<milliseconds>-<sequence>`.
                let at = id.split('-').next()?.parse().ok()?;
                let (_, payload) = fields.iter().find(|(name, _)| name == "event")?;
                let event = serde_json::from_str(payload).ok()?;
                Some(RecordedEvent { at, event })
            })
            .collect())
    }
}
