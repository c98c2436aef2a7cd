//! Senders: messages go out on the fixed schedule through the real send
//! endpoint (`PUT /v1/messages/{account_id}`), one ciphertext per message
//! for the recipient's one device.
//!
//! The schedule is open-loop: a message is due at its planned time whether
//! or not earlier ones were answered, and its latency is counted from that
//! time. When the hub falls behind, sends queue up in the bench (at most
//! `max_in_flight` are on the wire) and that wait shows in the latency
//! instead of silently lowering the rate (no coordinated omission).

use std::sync::Arc;
use std::time::{Duration, Instant};

use passerelle_proto::api::messages::{OutgoingMessage, SendMessages};
use passerelle_proto::{Base64Bytes, DeviceId, EnvelopeKind, Problem};
use rand::RngCore as _;
use tokio::sync::Semaphore;

use crate::payload;
use crate::protocol::Traffic;
use crate::recorder::Tracker;
use crate::register::Device;

/// Who sends to whom.
pub struct Pairs {
    /// Senders, one per pair.
    pub senders: Vec<Device>,
    /// Recipients, one per pair.
    pub recipients: Vec<Device>,
}

/// Sends every planned message, then waits for the answers, and (when
/// `await_receipt`) for the messages to arrive, up to the plan's grace.
pub async fn run(
    tracker: Arc<Tracker>,
    pairs: Arc<Pairs>,
    http: reqwest::Client,
    nodes: Arc<Vec<url::Url>>,
    plan: &Traffic,
    await_receipt: bool,
) -> anyhow::Result<()> {
    let count = pairs.senders.len().min(pairs.recipients.len()) as u64;
    if count == 0 {
        anyhow::bail!("no pairs to send between");
    }
    let in_flight = u32::try_from(plan.max_in_flight.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(in_flight as usize));
    let mut filler = vec![0; plan.size.max(payload::HEADER_LEN)];
    rand::rngs::OsRng.fill_bytes(&mut filler);
    let filler = Arc::new(filler);
    tracker.start();
    for m in 0..tracker.total() {
        let due = tracker.due(m);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let slot = slots.clone().acquire_owned().await?;
        let (tracker, pairs, http, nodes, filler) = (
            tracker.clone(),
            pairs.clone(),
            http.clone(),
            nodes.clone(),
            filler.clone(),
        );
        tokio::spawn(async move {
            let pair = usize::try_from(m % count).unwrap_or(0);
            let sender = &pairs.senders[pair];
            let result = send(
                &tracker,
                &http,
                &nodes[sender.node],
                sender,
                &pairs.recipients[pair],
                m,
                &filler,
            )
            .await;
            tracker.answered(m, result);
            drop(slot);
        });
    }
    let _all_answered = slots.acquire_many(in_flight).await?;
    if await_receipt {
        let until = Instant::now() + Duration::from_millis(plan.grace_ms);
        while !tracker.all_received() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

async fn send(
    tracker: &Tracker,
    http: &reqwest::Client,
    base: &url::Url,
    sender: &Device,
    recipient: &Device,
    m: u64,
    filler: &[u8],
) -> Result<(), String> {
    let mut content = filler.to_vec();
    payload::write(&mut content, tracker.header(m));
    let body = SendMessages {
        timestamp: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0)),
        messages: vec![OutgoingMessage {
            device_id: DeviceId::PRIMARY,
            registration_id: recipient.registration_id,
            kind: EnvelopeKind::Message,
            content: Base64Bytes(content),
        }],
        online_only: false,
    };
    let body = serde_json::to_vec(&body).map_err(|e| format!("encode: {e}"))?;
    let url = base
        .join(&format!("v1/messages/{}", recipient.account))
        .map_err(|e| format!("url: {e}"))?;
    let response = http
        .put(url)
        .header(reqwest::header::AUTHORIZATION, &sender.authorization)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let kind = response
        .json::<Problem>()
        .await
        .map(|p| format!(" {}", p.type_.rsplit(':').next().unwrap_or_default()))
        .unwrap_or_default();
    Err(format!("HTTP {}{kind}", status.as_u16()))
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "transport: timeout".into()
    } else if e.is_connect() {
        "transport: connect".into()
    } else {
        "transport: other".into()
    }
}
