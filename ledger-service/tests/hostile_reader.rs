//! The `openmodel-ledger` binary against a hostile reader, on the real
//! kube-apiserver of the test harness (TokenReviews, SubjectAccessReviews):
//! a ledger of 2,000 entries of 60 KiB, readers paging through it with
//! `limit 10000`, 50 watchers that never read, and 1,000 tile requests a
//! second without a token for 30 s. Through all of it the service's
//! resident memory stays under 256 MiB, the operator's appends keep at
//! least 90 % of the rate they had before the load (measured first, in the
//! same test) with bounded latency, and the readiness probe never fails.
//!
//! The operator appends one entry after the other at a steady pace, a
//! quarter of the rate one client reaches unloaded as fast as answers come
//! (measured first: some hundreds a second here, far beyond any operator).
//! Appending flat out would measure the machine instead of the service: on
//! two cores that appender alone keeps both busy, and the load generators
//! (curl, this test's readers) share the same cores, so any load slows it.
//! That flat-out figure is printed beside the others.
//!
//! Needs the control-plane binaries (`scripts/build-control-plane.sh`); the
//! test fails, loudly, without them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use openmodel_ledger::entry::{Entry, EntryBody};
use openmodel_ledger_service::client::{AuditClient, Credentials, append_request};
use openmodel_proto::audit::{EntryFilter, ListEntriesRequest, WatchEntriesRequest};
use openmodel_tests::audit_access::{Grant, audit_reader};
use openmodel_tests::entries::weights_verified;
use openmodel_tests::{ControlPlane, LedgerProcess, create_namespace, service_account_user};
use tonic::Code;

const BINARY: &str = env!("CARGO_BIN_EXE_openmodel-ledger");

/// The size of each seeded entry's canonical JSON, about.
const ENTRY_BYTES: usize = 60 << 10;
const ENTRIES: u64 = 2_000;
const WATCHERS_PER_VIEWER: usize = 5;
const VIEWERS: usize = 10;
const READERS: usize = 4;
const TILE_REQUESTS_PER_SECOND: u64 = 1_000;
const LOAD: Duration = Duration::from_secs(30);
const UNLOADED: Duration = Duration::from_secs(10);
/// The operator's pace in the measured runs, as a fraction of the rate one
/// client appends at unloaded, as fast as answers come (see the test).
const PACE_OF_CAPACITY: f64 = 0.25;
const MAX_RSS_MIB: f64 = 256.0;
/// The most the slowest append in a hundred may take under load: far
/// below the webhook's patience (7 s).
const MAX_APPEND_P99: Duration = Duration::from_millis(500);
/// The service's default `--max-response-bytes`.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A `weights.verified` entry about `namespace/model` whose source is
/// padded with `padding` bytes, to make the entry about [`ENTRY_BYTES`] long.
fn large_entry(namespace: &str, n: u64, padding: usize) -> Entry {
    let mut entry = weights_verified(namespace, "model", n);
    if let EntryBody::WeightsVerified(verified) = &mut entry.body {
        verified.source.push('#');
        verified.source.push_str(&"x".repeat(padding));
    }
    entry
}

/// A small entry, as the operator appends them.
fn small_entry(namespace: &str, n: u64) -> Entry {
    large_entry(namespace, 1_000_000 + n, 16)
}

/// Appends as the operator until `until`, one after the other, each when
/// the previous has been answered and, when `pace` is given, no sooner than
/// one `pace` after the one before (falling behind, it catches up): how long
/// each took.
async fn append_until(
    mut operator: AuditClient,
    namespace: &str,
    first: u64,
    until: Instant,
    pace: Option<Duration>,
) -> Result<Vec<Duration>> {
    let mut ticks = pace.map(tokio::time::interval);
    let mut latencies = Vec::new();
    for n in first.. {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        if Instant::now() >= until {
            break;
        }
        let sent = Instant::now();
        let receipt = operator
            .append(append_request(&small_entry(namespace, n))?)
            .await
            .with_context(|| format!("append {n}"))?
            .into_inner();
        ensure!(!receipt.existing, "append {n} was not new");
        latencies.push(sent.elapsed());
    }
    Ok(latencies)
}

/// What one run of appends did.
struct Appends {
    /// How long each append of the measured run took.
    latencies: Vec<Duration>,
    /// How long the measured run took.
    took: Duration,
    /// Appends in all, the warm-up's included.
    total: u64,
}

impl Appends {
    /// Appends a second in the measured run.
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.took.as_secs_f64()
    }

    /// The latency below which `fraction` of the appends took.
    fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 * fraction) as usize).min(sorted.len().saturating_sub(1));
        sorted.get(at).copied().unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "{} appends, {:.1}/s, p50 {:?}, p99 {:?}",
            self.latencies.len(),
            self.rate(),
            self.percentile(0.5),
            self.percentile(0.99)
        )
    }
}

/// The operator: appends, on a runtime of its own (in a cluster it is
/// another process), so the load this test makes on its own runtime does
/// not slow the appends it measures.
struct Operator {
    endpoint: String,
    ca_pem: String,
    token: String,
    namespace: String,
}

impl Operator {
    /// Appends as [`append_until`] does for `duration`, on a thread and
    /// runtime of its own, after half a second to warm up; entries are
    /// numbered from `first`.
    async fn append_for(
        &self,
        first: u64,
        duration: Duration,
        pace: Option<Duration>,
    ) -> Result<Appends> {
        let (endpoint, ca, token, namespace) = (
            self.endpoint.clone(),
            self.ca_pem.clone(),
            self.token.clone(),
            self.namespace.clone(),
        );
        let (done, result) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let appended = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    runtime.block_on(async {
                        let credentials = Credentials::token(&token)?;
                        let client = openmodel_ledger_service::client::connect(
                            &endpoint,
                            ca.as_bytes(),
                            credentials,
                        )
                        .await?;
                        let warm_up = Instant::now() + Duration::from_millis(500);
                        let warm =
                            append_until(client.clone(), &namespace, first, warm_up, pace).await?;
                        let started = Instant::now();
                        let next = first + warm.len() as u64;
                        let latencies =
                            append_until(client, &namespace, next, started + duration, pace)
                                .await?;
                        Ok(Appends {
                            took: started.elapsed(),
                            total: (warm.len() + latencies.len()) as u64,
                            latencies,
                        })
                    })
                });
            let _ = done.send(appended);
        });
        result.await.context("the appending thread")?
    }
}

/// What the flood of tile requests without a token got.
#[derive(Default, Debug)]
struct Flood {
    sent: u64,
    ok: u64,
    too_many: u64,
    /// 429s without a `Retry-After` of at least one second.
    bad_retry_after: u64,
    other: u64,
}

impl Flood {
    /// Counts the lines `curl -w '%{http_code} %header{retry-after}\n'`
    /// wrote.
    fn count(&mut self, written: &str) {
        for line in written.lines() {
            self.sent += 1;
            let mut fields = line.split_whitespace();
            let retry_after = |field: Option<&str>| field.and_then(|s| s.parse::<u64>().ok());
            match fields.next() {
                Some("200") => self.ok += 1,
                Some("429") if retry_after(fields.next()).is_some_and(|s| s >= 1) => {
                    self.too_many += 1
                }
                Some("429") => self.bad_retry_after += 1,
                _ => self.other += 1,
            }
        }
    }
}

/// curl (a real client, and cheap enough that the load it makes is the
/// service's, not its own) sending GETs of `url_glob` (curl's URL
/// globbing) one after the other over one HTTP/2 connection, at most
/// `per_second`, each with one second to answer; one line per answer on
/// its standard output.
fn curl_flood(ca_file: &Path, url_glob: &str, per_second: u64) -> Result<std::process::Child> {
    Command::new("nice")
        .args(["-n", "19", "curl"])
        .args(["--silent", "--http2", "--max-time", "1"])
        .arg("--cacert")
        .arg(ca_file)
        .args(["--rate", &format!("{per_second}/s")])
        .args(["--output", "/dev/null"])
        .args(["--write-out", "%{http_code} %header{retry-after}\\n"])
        .arg(url_glob)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running curl for the flood of tile requests: install curl 7.84 or newer (Debian: apt-get install curl)")
}

/// A kubelet's HTTPS readiness probe: a new connection each time, one
/// second to answer 200.
fn probe(ca_pem: &str, url: &str) -> Result<(), String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let ca = Certificate::from_pem(ca_pem.as_bytes())
        .map_err(|e| e.to_string())?
        .to_owned();
    let agent = ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .new_agent();
    match agent.get(url).call() {
        Ok(response) if response.status() == 200 => Ok(()),
        Ok(response) => Err(format!("status {}", response.status())),
        Err(error) => Err(error.to_string()),
    }
}

/// Pages through the namespace with `limit 10000` until `until`, checking
/// each page; the number of pages read.
async fn page_through(mut client: AuditClient, namespace: String, until: Instant) -> Result<u64> {
    let mut pages = 0;
    let mut start = 0;
    while Instant::now() < until {
        let page = client
            .list_entries(ListEntriesRequest {
                filter: Some(EntryFilter {
                    namespace: namespace.clone(),
                    ..EntryFilter::default()
                }),
                start,
                limit: 10_000,
            })
            .await
            .with_context(|| format!("a page from {start}"))?
            .into_inner();
        pages += 1;
        let bytes: usize = page.entries.iter().map(|e| e.leaf.len()).sum();
        ensure!(bytes < MAX_RESPONSE_BYTES, "a page of {bytes} bytes");
        ensure!(!page.entries.is_empty(), "an empty page from {start}");
        start = match page.next {
            Some(next) => {
                ensure!(
                    page.entries.len() < 10_000,
                    "the byte budget did not cut the page"
                );
                next
            }
            None => 0,
        };
    }
    Ok(pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_reader_neither_exhausts_the_service_nor_slows_appends() -> Result<()> {
    let control_plane = ControlPlane::shared().await?;
    let admin = control_plane.client()?;
    let ns = create_namespace(&admin, "hostile_reader").await?;
    let operator_token = audit_reader(&admin, &ns, "operator", Grant::Nowhere).await?;
    let mut viewer_tokens = Vec::new();
    for i in 0..VIEWERS {
        let name = format!("viewer-{i}");
        viewer_tokens.push(audit_reader(&admin, &ns, &name, Grant::Namespace(&ns)).await?);
    }

    // The ledger: 2,000 entries of 60 KiB.
    let padding = ENTRY_BYTES - small_entry(&ns, 0).canonical_bytes()?.len() + 16;
    let entries = (0..ENTRIES).map(|n| large_entry(&ns, n, padding)).collect();
    let seeded = Instant::now();
    let args = [
        "--append-user".to_owned(),
        service_account_user(&ns, "operator"),
    ];
    let service = LedgerProcess::start(BINARY.as_ref(), control_plane, entries, &args).await?;
    println!(
        "seeded {ENTRIES} entries of {ENTRY_BYTES} bytes and started in {:?}",
        seeded.elapsed()
    );
    let connect = async |token: &str| service.client(Credentials::token(token)?).await;

    // The unloaded append rate.
    let operator = Operator {
        endpoint: service.grpc_endpoint(),
        ca_pem: service.ca_pem().to_owned(),
        token: operator_token.clone(),
        namespace: ns.clone(),
    };
    let cpu = |pid| openmodel_tests::cluster_components::cpu_time(pid).unwrap_or_default();
    let (service_cpu, test_cpu) = (cpu(service.pid()), cpu(std::process::id()));
    let flat_out = operator.append_for(0, UNLOADED, None).await?;
    println!(
        "CPU while appending flat out: the service {:?}, this test {:?}",
        cpu(service.pid()) - service_cpu,
        cpu(std::process::id()) - test_cpu
    );
    println!("unloaded, flat out: {}", flat_out.describe());
    let pace = Duration::from_secs_f64(1.0 / (PACE_OF_CAPACITY * flat_out.rate()));
    let unloaded = operator
        .append_for(flat_out.total, UNLOADED, Some(pace))
        .await?;
    println!("unloaded, paced every {pace:?}: {}", unloaded.describe());

    // 50 watchers that never read: five for each of ten viewers.
    let mut watchers = Vec::new();
    for token in &viewer_tokens {
        let mut client = connect(token).await?;
        for _ in 0..WATCHERS_PER_VIEWER {
            let request = WatchEntriesRequest {
                filter: Some(EntryFilter {
                    namespace: ns.clone(),
                    ..EntryFilter::default()
                }),
                start: 0,
            };
            watchers.push(client.watch_entries(request).await?.into_inner());
        }
    }
    // One caller's calls are bounded: a viewer at the limit is refused.
    let mut greedy = connect(&viewer_tokens[0]).await?;
    let mut more = Vec::new();
    let refused = loop {
        let request = WatchEntriesRequest {
            filter: Some(EntryFilter {
                namespace: ns.clone(),
                ..EntryFilter::default()
            }),
            start: 0,
        };
        match greedy.watch_entries(request).await {
            Ok(stream) if more.len() < 10 => more.push(stream.into_inner()),
            Ok(_) => bail!(
                "a viewer opened {} watches",
                WATCHERS_PER_VIEWER + more.len() + 1
            ),
            Err(status) => break status,
        }
    };
    ensure!(
        refused.code() == Code::ResourceExhausted
            && refused.message().contains("--max-calls-per-caller"),
        "{refused:?}"
    );
    drop(more);

    // The load, and appends and readiness probes beside it.
    let until = Instant::now() + LOAD;
    // Readers: viewers other than the greedy one, whose dropped calls may
    // take a moment to end.
    let readers: Vec<_> = viewer_tokens
        .iter()
        .skip(1)
        .take(READERS)
        .map(|token| {
            let (token, ns) = (token.clone(), ns.clone());
            let endpoint = service.grpc_endpoint();
            let ca = service.ca_pem().to_owned();
            tokio::spawn(async move {
                let client = openmodel_ledger_service::client::connect(
                    &endpoint,
                    ca.as_bytes(),
                    Credentials::token(&token)?,
                )
                .await?;
                page_through(client, ns, until).await
            })
        })
        .collect();
    let (service_cpu, test_cpu) = (cpu(service.pid()), cpu(std::process::id()));
    // 1,000 requests a second without a token, from four curls: three
    // over the level-0 hash tiles, one for the checkpoint (a query string
    // makes each URL distinct; the service ignores it).
    let ca_dir = tempfile::tempdir()?;
    let ca_file = ca_dir.path().join("ca.crt");
    std::fs::write(&ca_file, service.ca_pem())?;
    let each = TILE_REQUESTS_PER_SECOND / 4;
    let count = each * LOAD.as_secs();
    let tiles = service.tiles_url(&format!("tile/0/00[0-6]?n=[1-{}]", count / 7 + 1));
    let checkpoint = service.tiles_url(&format!("checkpoint?n=[1-{count}]"));
    let mut flooders = Vec::new();
    for url in [&tiles, &tiles, &tiles, &checkpoint] {
        flooders.push(curl_flood(&ca_file, url, each)?);
    }
    let probing = Arc::new(AtomicBool::new(true));
    let prober = {
        let (ca, url) = (service.ca_pem().to_owned(), service.tiles_url("readyz"));
        let probing = probing.clone();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut probes = 0u64;
            while probing.load(Ordering::SeqCst) {
                probes += 1;
                if let Err(failure) = probe(&ca, &url) {
                    failures.push(failure);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (probes, failures)
        })
    };
    let loaded = operator
        .append_for(
            flat_out.total + unloaded.total,
            until.saturating_duration_since(Instant::now()),
            Some(pace),
        )
        .await?;
    let mut pages = 0;
    for reader in readers {
        pages += reader.await??;
    }
    let mut flood = Flood::default();
    for flooder in flooders {
        let output = tokio::task::spawn_blocking(move || flooder.wait_with_output()).await??;
        flood.count(&String::from_utf8_lossy(&output.stdout));
    }
    probing.store(false, Ordering::SeqCst);
    let (probes, probe_failures) = prober.join().expect("the probe thread");
    let peak_rss = service.peak_rss_mib().context("the service's memory")?;
    println!(
        "CPU during the load: the service {:?}, this test {:?}",
        cpu(service.pid()) - service_cpu,
        cpu(std::process::id()) - test_cpu
    );
    let sent = flood.sent;
    println!(
        "loaded, paced: {} ({:.0} % of the unloaded rate); {pages} pages of limit 10000; {sent} \
         tile requests ({:.0}/s): {} answered, {} told to retry later, {} other; {probes} \
         readiness probes; peak RSS {peak_rss:.1} MiB",
        loaded.describe(),
        100.0 * loaded.rate() / unloaded.rate(),
        sent as f64 / LOAD.as_secs_f64(),
        flood.ok,
        flood.too_many,
        flood.other,
    );

    ensure!(
        sent as f64 >= 0.9 * (TILE_REQUESTS_PER_SECOND * LOAD.as_secs()) as f64,
        "the test sent only {sent} tile requests in {LOAD:?}: the machine is too busy to run it"
    );
    ensure!(
        flood.too_many > sent / 2,
        "the requests without a token were not limited: {flood:?}"
    );
    ensure!(
        flood.bad_retry_after == 0 && flood.other == 0,
        "tile requests got other answers than 200 and 429 with Retry-After: {flood:?}"
    );
    ensure!(
        probe_failures.is_empty(),
        "readiness failed {} of {probes} times: {probe_failures:?}",
        probe_failures.len()
    );
    ensure!(
        peak_rss < MAX_RSS_MIB,
        "the service's resident memory peaked at {peak_rss:.1} MiB"
    );
    ensure!(
        loaded.rate() >= 0.9 * unloaded.rate(),
        "appends slowed to {:.1}/s under load, from {:.1}/s",
        loaded.rate(),
        unloaded.rate()
    );
    ensure!(
        loaded.percentile(0.99) < MAX_APPEND_P99,
        "one append in a hundred took more than {:?} under load",
        loaded.percentile(0.99)
    );

    // The watchers were dropped for not reading: what the transport had
    // already carried to the client (its HTTP/2 receive window, up to a few
    // MiB), then the reason, saying to watch again from the end of the last
    // message it got.
    let mut watcher = watchers.swap_remove(0);
    let (mut received, mut last_end) = (0usize, 0u64);
    loop {
        match watcher.message().await {
            Ok(Some(message)) => {
                ensure!(!message.entries.is_empty(), "an empty watch message");
                received += 1;
                last_end = message.scanned_end;
                ensure!(
                    received <= 64,
                    "a watcher that never read was sent more than 64 messages"
                );
            }
            Ok(None) => bail!("the watch ended without a reason after {received} messages"),
            Err(status) => {
                ensure!(
                    received > 0
                        && status.code() == Code::ResourceExhausted
                        && status.message().contains("--watch-send-timeout")
                        && status.message().contains(&format!("from index {last_end}")),
                    "after {received} messages ending at {last_end}: {status:?}"
                );
                break;
            }
        }
    }
    println!("a watcher that never read got {received} messages, then the reason");
    drop(watchers);
    let size = service.read_ledger()?.checkpoint()?.checkpoint.size;
    let appended = flat_out.total + unloaded.total + loaded.total;
    ensure!(
        size == 1 + ENTRIES + appended,
        "a tree of {size} entries after {appended} appends"
    );
    Ok(())
}
