//! Relays over a [`TestApp`]: settings and retry policies for tests, chains of simulators or of
//! HTTP adapters pointed at fakes, and runs until idle or drained.

use std::{sync::Arc, time::Duration};

use sms_relay::{
    config::RelaySettings,
    providers::{Link, Provider, ProviderChain, ProviderConfig, Simulator, SimulatorSettings},
    relay::{Relay, RetryPolicy, RunReport, StopWhen},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{TestApp, webhooks::PUBLIC, within};
use crate::fakes::FakeProvider;

/// Relay settings for tests: quick polls and short leases, no expiry margin.
pub fn settings() -> RelaySettings {
    RelaySettings {
        relay_id: Some(format!("test-{}", Uuid::new_v4().simple())),
        poll_interval_ms: 50,
        lease_ms: 10_000,
        expiry_margin_ms: 0,
        shutdown_grace_ms: 5_000,
        ..RelaySettings::default()
    }
}

/// A quick retry schedule: 20 ms, 40 ms, … capped at 100 ms.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        base_ms: 20,
        cap_ms: 100,
        ..RetryPolicy::default()
    }
}

/// A simulated provider named `name`.
pub fn simulator(name: &str, settings: SimulatorSettings) -> Arc<Simulator> {
    Arc::new(Simulator::new(name, settings).unwrap())
}

/// A simulated provider that accepts every message.
pub fn accepting(name: &str) -> Arc<Simulator> {
    simulator(name, SimulatorSettings::default())
}

/// A simulated provider that is down: every call is a provider error.
pub fn failing(name: &str) -> Arc<Simulator> {
    simulator(
        name,
        SimulatorSettings {
            provider_error: 1.0,
            ..SimulatorSettings::default()
        },
    )
}

/// A chain of `providers`, tried in order.
pub fn chain(providers: impl AsRef<[Arc<Simulator>]>) -> Arc<ProviderChain> {
    Arc::new(ProviderChain::new(
        providers
            .as_ref()
            .iter()
            .map(|p| Link::new(p.clone() as Arc<dyn Provider>))
            .collect(),
    ))
}

/// The `[[providers]]` entry for an adapter pointed at `fake` (see
/// [`FakeProvider::provider_entry`]), with `extra` keys on top.
pub fn provider_config(
    fake: &FakeProvider,
    name: &str,
    extra: serde_json::Value,
) -> ProviderConfig {
    let mut entry = fake.provider_entry(name);
    if let serde_json::Value::Object(extra) = extra {
        for (key, value) in extra {
            entry[key] = value;
        }
    }
    serde_json::from_value(entry).expect("a valid provider entry")
}

/// The chain `sms-relay run` would build from `configs`, asking for receipts at [`PUBLIC`].
pub fn http_chain(configs: &[ProviderConfig]) -> Arc<ProviderChain> {
    Arc::new(
        sms_relay::providers::from_config(
            configs,
            Some(PUBLIC),
            sms_relay::providers::UnknownPolicy::FallOver,
        )
        .expect("the chain builds"),
    )
}

/// Runs `relay` until nothing is due or in flight.
pub async fn run_relay_until_idle(relay: Relay) -> RunReport {
    within(60, relay.run(StopWhen::Idle, CancellationToken::new()))
        .await
        .expect("relay runs")
}

/// Runs `relay` until nothing is owed, failing the test if something still is after 30 s.
pub async fn run_relay_until_drained(relay: Relay) -> RunReport {
    within(
        60,
        relay.run(
            StopWhen::Drained(Duration::from_secs(30)),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("nothing is left owed")
}

impl TestApp {
    /// Runs one relay with `providers` until nothing is due or in flight.
    pub async fn run_until_idle(
        &self,
        providers: impl AsRef<[Arc<Simulator>]>,
        policy: RetryPolicy,
    ) -> RunReport {
        self.run_chain_until_idle(chain(providers), policy).await
    }

    /// Runs one relay through `chain` until nothing is due or in flight.
    pub async fn run_chain_until_idle(
        &self,
        chain: Arc<ProviderChain>,
        policy: RetryPolicy,
    ) -> RunReport {
        run_relay_until_idle(Relay::new(self.store(), chain, settings(), policy)).await
    }

    /// Runs one relay through `chain` until nothing is owed (no message pending or claimed,
    /// retries included).
    pub async fn run_chain_until_drained(
        &self,
        chain: Arc<ProviderChain>,
        policy: RetryPolicy,
    ) -> RunReport {
        run_relay_until_drained(Relay::new(self.store(), chain, settings(), policy)).await
    }

    /// Runs a relay with one accepting simulator named `sim` until nothing is due; returns the
    /// simulator, which counts what it sent.
    pub async fn send_due(&self) -> Arc<Simulator> {
        let sim = accepting("sim");
        self.run_until_idle([sim.clone()], quick_retries()).await;
        sim
    }
}
