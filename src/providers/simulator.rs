//! The built-in `simulator` provider: no network, configurable latency and failure mix, and a
//! count (optionally a journal file) of what it sent. For demos, tests and benchmarks.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::RngExt;
use serde::Deserialize;

use super::{
    Accepted, BoxFuture, BuildError, Delivery, KindSettings, OutgoingSms, Provider, Receipt,
    Reports, SendError, http::Connection,
};

/// Behaviour of a simulator. Ratios are probabilities in `0..=1`; what they leave is accepted.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Time each send takes, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of sends answered with a provider error (503).
    #[serde(default)]
    pub provider_error: f64,
    /// Share of sends answered with "invalid number".
    #[serde(default)]
    pub bad_recipient: f64,
    /// Share of sends that time out after the request left (the message *was* sent).
    #[serde(default)]
    pub unknown: f64,
    /// If set, every message handed to the network is appended here as one line: its id.
    #[serde(default)]
    pub journal: Option<PathBuf>,
    /// Whether the relay polls this simulator for delivery reports (as it polls Alpha SMS).
    #[serde(default)]
    pub receipts: bool,
    /// Share of accepted messages whose report says undelivered (the rest are delivered).
    #[serde(default)]
    pub undelivered: f64,
}

impl KindSettings for SimulatorSettings {
    fn label(&self) -> &'static str {
        "simulator"
    }

    fn validate(&self) -> Result<(), String> {
        let ratios = [self.provider_error, self.bad_recipient, self.unknown];
        if ratios.iter().any(|r| !(0.0..=1.0).contains(r)) || ratios.iter().sum::<f64>() > 1.0 {
            return Err("simulator ratios must be in 0..=1 and sum to at most 1".into());
        }
        if !(0.0..=1.0).contains(&self.undelivered) {
            return Err("simulator undelivered must be in 0..=1".into());
        }
        Ok(())
    }

    fn expects_receipts(&self, _webhooks_reachable: bool) -> bool {
        self.receipts
    }

    fn build(
        &self,
        connection: &Connection,
        _callback: Option<String>,
    ) -> Result<Arc<dyn Provider>, BuildError> {
        let simulator =
            Simulator::new(connection.name.clone(), self.clone()).map_err(|source| {
                BuildError::Journal {
                    name: connection.name.clone(),
                    source,
                }
            })?;
        Ok(Arc::new(simulator))
    }
}

/// The simulator provider.
pub struct Simulator {
    name: String,
    settings: SimulatorSettings,
    sent: AtomicU64,
    calls: AtomicU64,
    journal: Option<Mutex<File>>,
}

impl Simulator {
    /// A simulator named `name`. Opens the journal file for appending if one is configured.
    pub fn new(name: impl Into<String>, settings: SimulatorSettings) -> std::io::Result<Self> {
        let journal = match &settings.journal {
            Some(path) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
            None => None,
        };
        Ok(Self {
            name: name.into(),
            settings,
            sent: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            journal,
        })
    }

    /// Messages this simulator handed to the (imaginary) network: accepted plus unknown.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Every call, whatever its answer.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn record_sent(&self, sms: &OutgoingSms) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if let Some(journal) = &self.journal {
            let mut file = journal
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // One write per line: with O_APPEND it lands whole even if the process is killed
            // right after, so a restarted relay's lines never merge into a torn one.
            if let Err(error) = file.write_all(format!("{}\n", sms.message_id).as_bytes()) {
                tracing::warn!(%error, "simulator journal write failed");
            }
        }
    }

    fn answer(&self, sms: &OutgoingSms) -> Result<Accepted, SendError> {
        let s = &self.settings;
        let roll: f64 = rand::rng().random();
        if roll < s.bad_recipient {
            return Err(SendError::BadRecipient {
                http_status: Some(400),
                code: "SIM_INVALID_NUMBER".into(),
                message: "simulated invalid number".into(),
            });
        }
        if roll < s.bad_recipient + s.provider_error {
            return Err(SendError::Provider {
                http_status: Some(503),
                code: "SIM_UNAVAILABLE".into(),
                message: "simulated provider outage".into(),
                retry_after: None,
            });
        }
        self.record_sent(sms);
        if roll < s.bad_recipient + s.provider_error + s.unknown {
            return Err(SendError::Unknown {
                http_status: None,
                message: "simulated timeout after the request was sent".into(),
            });
        }
        // The fate of the message rides in its id, so a report can tell it without any state.
        let mut rng = rand::rng();
        let fate = if rng.random::<f64>() < s.undelivered {
            UNDELIVERED
        } else {
            DELIVERED
        };
        // From the thread's generator: a v4 UUID would ask the kernel for randomness each time.
        let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        Ok(Accepted {
            provider_message_id: format!("sim-{fate}-{id}"),
            http_status: Some(200),
            cost: None,
            note: None,
        })
    }
}

const DELIVERED: &str = "d";
const UNDELIVERED: &str = "u";

/// The report for a message id this simulator issued; `None` for any other id.
fn simulated_report(provider_message_id: &str) -> Option<Receipt> {
    let rest = provider_message_id.strip_prefix("sim-")?;
    let (word, status) = match rest.split_once('-')?.0 {
        DELIVERED => ("DELIVERED", Delivery::Delivered),
        UNDELIVERED => ("UNDELIVERED", Delivery::Undelivered),
        _ => return None,
    };
    Some(Receipt {
        provider_message_id: provider_message_id.to_owned(),
        client_ref: None,
        status_raw: word.to_owned(),
        status,
        error_code: (status == Delivery::Undelivered).then(|| "SIM_ABSENT".to_owned()),
        permanent: false,
        done_at: None,
        cost: None,
        dedupe_key: format!("simulator:{provider_message_id}:{word}"),
        payload: serde_json::json!({ "id": provider_message_id, "status": word }),
    })
}

impl Provider for Simulator {
    fn name(&self) -> &str {
        &self.name
    }

    fn reaches_phones(&self) -> bool {
        false
    }

    fn send<'a>(
        &'a self,
        sms: &'a OutgoingSms,
        _reference: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if self.settings.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.settings.latency_ms)).await;
            }
            self.answer(sms)
        })
    }

    fn reports(&self) -> Reports {
        if self.settings.receipts {
            Reports::PerMessage
        } else {
            Reports::None
        }
    }

    fn report<'a>(
        &'a self,
        provider_message_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Receipt>, SendError>> {
        Box::pin(async move { Ok(simulated_report(provider_message_id)) })
    }
}
