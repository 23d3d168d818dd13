//! The `till` binary end to end: `till up` on an embedded cluster (first start, reuse,
//! graceful stop on SIGTERM and Ctrl-C), `till admin create-business`, DATABASE_URL, no
//! PostgreSQL binaries, a killed `till up`, and (when the tests run as root) `till up` as
//! an ordinary user.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const READY_TIMEOUT: Duration = Duration::from_secs(90);

struct Running {
    child: Reaped,
    output: Vec<String>,
    port: u16,
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so that a test that
/// fails half-way leaves no `till up` or `till sim` behind: one left running keeps the
/// test runner's stderr open, and CI waits on it until its time runs out.
struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("till-cli-{label}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn till() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_till"));
    command.env_remove("DATABASE_URL").env_remove("TILL_ADMIN_TOKEN").env("RUST_LOG", "warn");
    command
}

/// Starts `till up` and reads its banner up to "Press Ctrl-C". `port` 0 lets the API take
/// any free port (read back from the banner), so parallel tests cannot collide on it.
fn start_up(mut command: Command, port: u16) -> Running {
    command.args(["up", "--port", &port.to_string()]).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().expect("spawn till up");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut output = Vec::new();
    while let Ok(line) = receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.contains("Press Ctrl-C");
        output.push(line);
        if done {
            let port = output
                .iter()
                .find_map(|line| line.trim().strip_prefix("API:"))
                .and_then(|url| url.trim().trim_start_matches("http://127.0.0.1:").trim_end_matches("/v1").parse().ok())
                .unwrap_or(port);
            return Running { child: Reaped(child), output, port };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("till up did not become ready; it printed:\n{}", output.join("\n"));
}

fn api_key_in(output: &[String]) -> Option<String> {
    output.iter().map(|line| line.trim()).find(|line| line.starts_with("till_sk_")).map(str::to_string)
}

fn get_business(port: u16, key: &str) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/business"))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    })
}

fn stop(mut running: Running, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(running.child.id()).expect("pid"));
    kill(pid, signal).expect("signal");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = running.child.try_wait().expect("wait") {
            assert!(status.success(), "till up exits cleanly after {signal:?}: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "till up did not stop after {signal:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster_dir(data_dir: &Path) -> PathBuf {
    PathBuf::from(std::fs::read_to_string(data_dir.join("pg.initialized")).expect("cluster recorded").trim())
}

fn wait_until_gone(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while path.exists() {
        assert!(Instant::now() < deadline, "{what}: {} still exists", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn till_up_first_start_reuse_and_graceful_stops() {
    let data_dir = temp_dir("up");
    let mut first = till();
    first.env("TILL_DATA_DIR", &data_dir);
    let running = start_up(first, 0);
    let key = api_key_in(&running.output).expect("the first start prints a key");
    assert!(running.output.iter().any(|line| line.contains(&format!("http://127.0.0.1:{}/docs", running.port))));
    assert!(running.output.iter().any(|line| line.contains("till_admin_")), "the admin token is printed once");
    let (status, business) = get_business(running.port, &key);
    assert_eq!(status, 200);
    assert_eq!(business["legal_name"], "Till Demo Ltd");
    let pg_dir = cluster_dir(&data_dir);
    stop(running, Signal::SIGTERM);
    assert!(!pg_dir.join("postmaster.pid").exists(), "PostgreSQL stopped cleanly");
    let log = std::fs::read_to_string(data_dir.join("postgres.log")).expect("log");
    assert!(log.contains("database system is shut down"));
    let token_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data_dir.join("admin-token")).expect("token").permissions(),
    );
    assert_eq!(token_mode & 0o777, 0o600);

    // A business created from the CLI while Till is down (it starts the cluster itself).
    let output = till()
        .env("TILL_DATA_DIR", &data_dir)
        .args(["admin", "create-business", "--name", "Chai Wala Pvt Ltd", "--country", "IN", "--json"])
        .output()
        .expect("admin create-business");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let indian_key = created["api_key"]["secret"].as_str().expect("secret").to_string();
    assert_eq!(created["business"]["default_currency"], "INR");
    assert!(!pg_dir.join("postmaster.pid").exists(), "the command stopped the cluster it started");

    let mut second = till();
    second.env("TILL_DATA_DIR", &data_dir);
    let running = start_up(second, 0);
    assert_eq!(api_key_in(&running.output), None, "no second demo business or key");
    assert!(!running.output.iter().any(|line| line.contains("till_admin_")), "the admin token is not printed again");
    assert_eq!(get_business(running.port, &key).0, 200, "the cluster and its data are reused");
    let (status, business) = get_business(running.port, &indian_key);
    assert_eq!((status, business["country"].as_str()), (200, Some("IN")));
    stop(running, Signal::SIGINT);
    assert!(!pg_dir.join("postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
}

#[test]
fn a_killed_till_up_does_not_leave_postgres_running() {
    let data_dir = temp_dir("kill");
    let mut command = till();
    command.env("TILL_DATA_DIR", &data_dir);
    let running = start_up(command, 0);
    let pid_file = cluster_dir(&data_dir).join("postmaster.pid");
    assert!(pid_file.exists());
    let pg_port = std::fs::read_to_string(data_dir.join("postgres.port")).expect("the port file");
    let mut child = running.child;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // Started again at once, as a supervisor would: the old postmaster may still be in
    // its shutdown checkpoint, and the new `till up` waits for it instead of failing.
    let mut again = till();
    again.env("TILL_DATA_DIR", &data_dir);
    let running = start_up(again, 0);
    assert_eq!(get_business(running.port, "till_sk_nobody").0, 401, "the restarted Till answers");
    let pg_port_again = std::fs::read_to_string(data_dir.join("postgres.port")).expect("the port file");
    assert_eq!(pg_port_again, pg_port, "the cluster kept its port once the old postmaster was gone");
    stop(running, Signal::SIGTERM);
    wait_until_gone(&pid_file, "the watchdog stops PostgreSQL");
    let pg_dir = cluster_dir(&data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
}

#[test]
fn without_postgres_binaries_it_says_how_to_install_them() {
    let data_dir = temp_dir("nobin");
    let output = till()
        .env("TILL_DATA_DIR", &data_dir)
        .env("TILL_PG_BINDIR", data_dir.join("nowhere"))
        .args(["up", "--port", &free_port().to_string()])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no PostgreSQL server binaries were found"), "{stderr}");
    assert!(stderr.contains("apt-get install -y postgresql") && stderr.contains("DATABASE_URL"), "{stderr}");
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn with_database_url_nothing_is_provisioned() {
    let database = till_testkit::fresh_database().await.expect("database");
    let data_dir = temp_dir("url");
    let url = database.url.clone();
    let running = tokio::task::spawn_blocking(move || {
        let mut command = till();
        command.env("TILL_DATA_DIR", &data_dir).env("DATABASE_URL", &url);
        (start_up(command, 0), data_dir)
    })
    .await
    .expect("start");
    let (running, data_dir) = running;
    assert!(running.output.iter().any(|line| line.contains("(DATABASE_URL)")));
    assert!(!data_dir.join("pg").exists() && !data_dir.join("pg.initialized").exists(), "no cluster was provisioned");
    let key = api_key_in(&running.output).expect("key");
    let port = running.port;
    let (status, _) = tokio::task::spawn_blocking(move || get_business(port, &key)).await.expect("get");
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || stop(running, Signal::SIGTERM)).await.expect("stop");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// PostgreSQL refuses root, so `till up` as root runs it as an unprivileged user (tested
/// above whenever the suite runs as root). This checks the other half: an ordinary user
/// runs `till up` too. It needs root to become that user, so it runs only as root.
#[test]
fn till_up_runs_as_an_ordinary_user() {
    if !nix::unistd::geteuid().is_root() {
        // Already an ordinary user: every other test here is this case.
        return;
    }
    let Some(user) = nix::unistd::User::from_name("nobody").ok().flatten() else { return };
    let data_dir = temp_dir("user");
    std::os::unix::fs::chown(&data_dir, Some(user.uid.as_raw()), Some(user.gid.as_raw())).expect("chown");
    // The build directory may sit under a directory the user cannot enter (root's home);
    // give the user its own copy of the binary.
    let binary = temp_dir("user-bin").join("till");
    std::fs::copy(env!("CARGO_BIN_EXE_till"), &binary).expect("copy the binary");
    for dir in [binary.parent().expect("parent"), binary.as_path()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", &user.uid.to_string(), "--regid", &user.gid.to_string(), "--clear-groups", "--"])
        .arg(&binary)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .env("TILL_DATA_DIR", &data_dir)
        .env("HOME", &data_dir)
        .current_dir(&data_dir);
    let running = start_up(command, 0);
    let key = api_key_in(&running.output).expect("key");
    assert_eq!(get_business(running.port, &key).0, 200);
    let pg_dir = cluster_dir(&data_dir);
    assert_eq!(pg_dir, data_dir.join("pg"), "an ordinary user keeps the cluster in its data directory");
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&pg_dir).expect("pg")), user.uid.as_raw());
    stop(running, Signal::SIGTERM);
    assert!(!pg_dir.join("postmaster.pid").exists());
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(binary.parent().expect("parent"));
}

/// `till events dead-letters` lists a consumer's dead letters and leaves them;
/// `replay-dead-letters` sends the events back to the consumer's queue and keeps what is
/// not an event.
#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_cli() {
    use till_events::broker::{self, lapin, BrokerConfig};
    let url = till_testkit::broker::shared_broker_url().expect("broker");
    let mut config = BrokerConfig::new(till_kit::Secret::new(url.clone()));
    config.exchange = format!("till.cli.{}", uuid::Uuid::now_v7().simple());
    let consumer = format!("cli-{}", uuid::Uuid::now_v7().simple().to_string().chars().skip(20).collect::<String>());
    let connection = broker::connect(&config, "cli-test").await.expect("connect");
    let channel = broker::confirm_channel(&connection).await.expect("channel");
    broker::declare_consumer(&channel, &config, &consumer, &["#".to_string()]).await.expect("declare");
    let event: till_outbox::envelope::EventBody = serde_json::from_value(serde_json::json!({
        "id": "evt_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "type": "transfer.created", "version": 1,
        "business_id": "biz_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0", "resource_id": "tr_01936f0e6c2a7cc2b0a6a4e5f3d2c1b1",
        "sequence": 1, "occurred_at": "2026-11-22T10:00:00Z", "request_id": null, "data": {}
    }))
    .expect("event");
    let dead = broker::dead_queue_name(&consumer);
    let letters: [(Vec<u8>, lapin::BasicProperties); 2] = [
        (serde_json::to_vec(&event).expect("json"), broker::event_properties(&event, 6, Some("the handler failed"))),
        (b"garbage".to_vec(), lapin::BasicProperties::default()),
    ];
    for (body, properties) in letters {
        broker::consumer::publish_confirmed(&channel, &dead, &body, properties).await.expect("publish");
    }
    let run = |args: &[&str]| {
        let output = till().args(args).env("TILL_BROKER_URL", &url).output().expect("run till");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed = run(&["events", "dead-letters", "--consumer", &consumer]);
    assert!(
        listed.contains("evt_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0  transfer.created  attempts 6  the handler failed"),
        "{listed}"
    );
    assert!(listed.contains("(not an event)") && listed.contains("2 dead letter(s)"), "{listed}");
    let again = run(&["events", "dead-letters", "--consumer", &consumer, "--json"]);
    assert_eq!(again.lines().count(), 2, "listing leaves them in the queue: {again}");

    let replayed = run(&["events", "replay-dead-letters", "--consumer", &consumer]);
    assert!(
        replayed.contains("replayed evt_01936f0e6c2a7cc2b0a6a4e5f3d2c1b0")
            && replayed.contains("1 dead letter(s) sent back"),
        "{replayed}"
    );
    let left = run(&["events", "dead-letters", "--consumer", &consumer]);
    assert!(left.contains("1 dead letter(s)") && left.contains("(not an event)"), "{left}");
    let back = channel
        .basic_get(broker::queue_name(&consumer).as_str().into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the replayed event is in the consumer's queue");
    assert_eq!(broker::attempt_of(&back.delivery.properties), 1, "with fresh attempts");
    assert_eq!(broker::parse_event(&back.delivery.data).expect("an event"), event);
}

/// `till sim` serves the simulator alone: a Stripe client's create is answered in
/// Stripe's shape, the control API sees the call, and SIGTERM stops it cleanly.
#[test]
fn till_sim_serves_the_simulator_until_sigterm() {
    let (child, base, banner) = start_sim();
    assert!(banner.contains("No real money moves"), "{banner}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let created: serde_json::Value = client
            .post(format!("{base}/stripe/v1/payment_intents"))
            .bearer_auth("sk_test_cli")
            .form(&[("amount", "1200"), ("currency", "gbp")])
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("json");
        assert_eq!((created["object"].as_str(), created["amount"].as_i64()), (Some("payment_intent"), Some(1200)));
        let calls: serde_json::Value = client
            .get(format!("{base}/_sim/calls?provider=stripe"))
            .send()
            .await
            .expect("calls")
            .json()
            .await
            .expect("json");
        assert_eq!(calls["data"][0]["operation"], "create");
    });
    let running = Running { child, output: Vec::new(), port: 0 };
    stop(running, Signal::SIGTERM);
}

/// `till sim` on any port, as its own process: it, its address and its banner.
fn start_sim() -> (Reaped, String, String) {
    let mut child = Reaped(
        till()
            .args(["sim", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn till sim"),
    );
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let banner = lines.next().expect("a banner").expect("banner text");
    // Read on, so that the simulator never writes to a closed pipe (it would die of it).
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let base = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .map(|url| url.trim_end_matches(':').to_string())
        .expect("the address in the banner");
    (child, base, banner)
}

/// Kill -9 of `till up` while 12 clients confirm, capture and refund, then a restart:
/// every intent ends in the state Stripe (the simulator, which lives on) holds, with
/// Stripe's refunded amount, nothing stays `processing` past the lease and the grace, and
/// the ledger and the payment invariants hold.
#[test]
fn a_killed_till_up_finishes_every_payment_it_started() {
    let data_dir = temp_dir("payments-kill");
    let (mut sim, sim_base, _) = start_sim();
    let start = |port: u16| {
        let mut command = till();
        command
            .env("TILL_DATA_DIR", &data_dir)
            .env("TILL_STRIPE_BASE_URL", format!("{sim_base}/stripe/"))
            .env("TILL_STRIPE_SECRET_KEY", "sk_test_chaos")
            .env("TILL_STRIPE_WEBHOOK_SECRET", "whsec_chaos")
            .env("TILL_RECOVERY_LEASE_SECONDS", "3")
            .env("TILL_RECOVERY_GRACE_SECONDS", "1")
            .env("TILL_RATE_LIMIT_PER_SECOND", "100000")
            .env("TILL_RATE_LIMIT_BURST", "100000");
        start_up(command, port)
    };
    let running = start(0);
    let port = running.port;
    let key = api_key_in(&running.output).expect("the demo business's key");
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    runtime.block_on(async {
        let target = serde_json::json!({"provider": "stripe", "url": format!("{base}/v1/providers/stripe/webhooks"), "secret": "whsec_chaos"});
        let set = client.post(format!("{sim_base}/_sim/webhooks")).json(&target).send().await.expect("target");
        assert_eq!(set.status().as_u16(), 201);
    });

    // The load: each client pays (half capture later), then refunds part, until killed.
    let stop_at = Instant::now() + Duration::from_millis(2_500);
    let load = runtime.spawn({
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        async move {
            let clients = (0..12).map(|n| {
                let (client, base, key) = (client.clone(), base.clone(), key.clone());
                tokio::spawn(async move {
                    let post = |path: String, body: serde_json::Value| {
                        client
                            .post(format!("{base}{path}"))
                            .bearer_auth(&key)
                            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
                            .json(&body)
                            .send()
                    };
                    let mut round = 0;
                    while Instant::now() < stop_at {
                        round += 1;
                        let manual = (n + round) % 2 == 0;
                        let method = if manual { "manual" } else { "automatic" };
                        let body = serde_json::json!({"amount": 1000 + n, "currency": "GBP", "capture_method": method,
                                                      "payment_method": "pm_card_visa", "confirm": true});
                        let Ok(created) = post("/v1/payment_intents".into(), body).await else { continue };
                        let Ok(intent) = created.json::<serde_json::Value>().await else { continue };
                        let Some(id) = intent["id"].as_str().map(str::to_string) else { continue };
                        if manual {
                            let _ = post(format!("/v1/payment_intents/{id}/capture"), serde_json::json!({})).await;
                        }
                        let _ = post("/v1/refunds".into(), serde_json::json!({"payment_intent_id": id, "amount": 100}))
                            .await;
                    }
                })
            });
            for client in clients.collect::<Vec<_>>() {
                let _ = client.await;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let mut child = running.child;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let killed_at = Instant::now();
    let _ = runtime.block_on(load);

    let running = start(port);
    runtime.block_on(async {
        let get = |path: String| {
            let (client, base, key) = (client.clone(), base.clone(), key.clone());
            async move {
                // Every read must be an answer: a 503 read as "no data" could end the
                // wait below while a refund is still pending (the restarted Till's pool
                // busy with the points it resumes). A client retries a 503.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let response = client.get(format!("{base}{path}")).bearer_auth(&key).send().await.expect("get");
                    let status = response.status().as_u16();
                    let body = response.json::<serde_json::Value>().await.expect("json");
                    if status == 503 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    assert_eq!(status, 200, "GET {path}: {body}");
                    return body;
                }
            }
        };
        // Within the lease and the grace (and the job's pass), nothing is processing.
        let at_restart = get("/v1/payment_intents?status=processing&limit=100".into()).await;
        eprintln!("processing at the restart: {}", at_restart["data"].as_array().map_or(0, Vec::len));
        // Refunds too: a refund whose call was in flight is `pending` (its intent is not
        // processing) until the job resumes it. And a request that died before its first
        // phase committed has nothing to show until the job resumes it from the start:
        // the job takes every abandoned key once its lease (3 s) and the grace (1 s) have
        // run out, within its 1 s tick, so nothing counts as settled before then, and
        // only two quiet looks a second apart end the wait.
        let quiet_from = killed_at + Duration::from_secs(3 + 1 + 2);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        loop {
            let processing = get("/v1/payment_intents?status=processing&limit=100".into()).await;
            let refunds = get("/v1/refunds?limit=100".into()).await;
            let pending: Vec<_> = refunds["data"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|refund| refund["status"] == "pending")
                .collect();
            if processing["data"].as_array().is_some_and(Vec::is_empty) && pending.is_empty() {
                quiet += 1;
                if quiet >= 2 && Instant::now() >= quiet_from {
                    break;
                }
            } else {
                quiet = 0;
            }
            assert!(Instant::now() < deadline, "still processing after the restart: {processing}, {pending:?}");
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
        let mut intents = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(cursor) => format!("/v1/payment_intents?limit=100&starting_after={cursor}"),
                None => "/v1/payment_intents?limit=100".to_string(),
            };
            let page = get(path).await;
            intents.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(cursor) => after = Some(cursor.to_string()),
                None => break,
            }
        }
        assert!(intents.len() >= 12, "the load made payments: {}", intents.len());
        eprintln!("intents after the restart: {}", intents.len());
        for intent in &intents {
            let Some(gateway_id) = intent["gateway_intent_id"].as_str() else {
                // Stripe never made it: Till never got past recording it.
                assert!(
                    matches!(intent["status"].as_str(), Some("requires_payment_method" | "requires_confirmation")),
                    "{intent}"
                );
                continue;
            };
            let stripe: serde_json::Value = client
                .get(format!("{sim_base}/_sim/stripe/objects/{gateway_id}"))
                .send()
                .await
                .expect("object")
                .json()
                .await
                .expect("json");
            assert_eq!(intent["status"], stripe["status"], "Till and Stripe agree on {intent} / {stripe}");
            assert_eq!(intent["amount_received"], stripe["amount_received"], "{intent} / {stripe}");
            if let Some(charge) = stripe["latest_charge"].as_str() {
                let charge: serde_json::Value = client
                    .get(format!("{sim_base}/_sim/stripe/objects/{charge}"))
                    .send()
                    .await
                    .expect("charge")
                    .json()
                    .await
                    .expect("json");
                let id = intent["id"].as_str().unwrap_or_default();
                let refunds = get(format!("/v1/refunds?payment_intent_id={id}")).await;
                assert_eq!(
                    intent["amount_refunded"], charge["amount_refunded"],
                    "refunds agree: {intent} / {charge} / Till's refunds {refunds}"
                );
            }
        }
        let pending = get("/v1/refunds?limit=100".into()).await;
        for refund in pending["data"].as_array().cloned().unwrap_or_default() {
            assert_ne!(refund["status"], "pending", "no refund is left pending: {refund}");
        }
        let ledger = get("/v1/ledger/check".into()).await;
        assert_eq!(ledger["ok"], true, "{ledger}");
        let payments = get("/v1/payments/check".into()).await;
        assert_eq!(payments["ok"], true, "{payments}");
    });
    stop(running, Signal::SIGTERM);
    let _ = sim.kill();
    let _ = sim.wait();
    let pg_dir = cluster_dir(&data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
}

/// Kill -9 of `till up` while 8 clients make 200 payouts to a UK account and the saga
/// sends them over Faster Payments, then a restart: see [`payouts_survive_a_kill`].
#[test]
fn a_killed_till_up_pays_every_payout_exactly_once() {
    payouts_survive_a_kill(&PayoutRail {
        name: "fps",
        currency: "GBP",
        country: None,
        env: &[
            ("TILL_STRIPE_BASE_URL", "/stripe/"),
            ("TILL_STRIPE_SECRET_KEY", "=sk_test_chaos"),
            ("TILL_FPS_BASE_URL", "/fps/"),
            ("TILL_FPS_API_KEY", "=fps_test_chaos"),
            ("TILL_FPS_SOURCE_ACCOUNT", "=A000CHAOS"),
            ("TILL_FPS_WEBHOOK_SECRET", "=chaos_fps_webhooks"),
        ],
        webhook: ("chaos_fps_webhooks", "/v1/providers/fps/webhooks"),
        funding: serde_json::json!({"amount": 100_000, "currency": "GBP", "payment_method": "pm_card_visa",
                                    "confirm": true}),
        gateway: "stripe",
        beneficiary: serde_json::json!({"type": "uk_account", "name": "Acme Supplies", "sort_code": "089999",
                                        "account_number": "66374958"}),
        amount: 10,
        paid: "PROCESSED",
        echo: "externalReference",
    });
}

/// The same for India: 200 IMPS payouts through RazorpayX, `till up` killed among them.
#[test]
fn a_killed_till_up_pays_every_razorpayx_payout_exactly_once() {
    payouts_survive_a_kill(&PayoutRail {
        name: "razorpayx",
        currency: "INR",
        country: Some("IN"),
        env: &[
            ("TILL_STRIPE_BASE_URL", "/stripe/"),
            ("TILL_STRIPE_SECRET_KEY", "=sk_test_chaos"),
            ("TILL_RAZORPAY_BASE_URL", "/razorpay/"),
            ("TILL_RAZORPAY_KEY_ID", "=rzp_test_chaos"),
            ("TILL_RAZORPAY_KEY_SECRET", "=chaos_secret"),
            ("TILL_RAZORPAYX_BASE_URL", "/razorpayx/"),
            ("TILL_RAZORPAYX_KEY_ID", "=rzp_test_chaosx"),
            ("TILL_RAZORPAYX_KEY_SECRET", "=chaos_secret"),
            ("TILL_RAZORPAYX_ACCOUNT_NUMBER", "=2323230041626905"),
            ("TILL_RAZORPAYX_WEBHOOK_SECRET", "=chaos_razorpayx_webhooks"),
        ],
        webhook: ("chaos_razorpayx_webhooks", "/v1/providers/razorpayx/webhooks"),
        funding: serde_json::json!({"amount": 50_000, "currency": "INR", "confirm": true,
                                    "payment_method": {"type": "upi", "vpa": "success@razorpay"}}),
        gateway: "razorpay",
        beneficiary: serde_json::json!({"type": "in_account", "name": "Asha Rao", "ifsc": "HDFC0001234",
                                        "account_number": "123456789012"}),
        amount: 100,
        paid: "processed",
        echo: "reference_id",
    });
}

/// A payout rail as the kill test drives it.
struct PayoutRail {
    /// The simulator's provider.
    name: &'static str,
    currency: &'static str,
    /// The country of a business of the test's own; `None`: the demo business.
    country: Option<&'static str>,
    /// `till up`'s environment: a value starting `/` is a path at the simulator, one
    /// starting `=` is itself.
    env: &'static [(&'static str, &'static str)],
    /// The rail's webhook secret and Till's path for it.
    webhook: (&'static str, &'static str),
    /// The payment that funds the payouts, and the gateway that settles it.
    funding: serde_json::Value,
    gateway: &'static str,
    beneficiary: serde_json::Value,
    /// Each payout's amount (RazorpayX pays at least ₹1).
    amount: i64,
    /// The rail's status of a paid payment, and the field that echoes the payout's id.
    paid: &'static str,
    echo: &'static str,
}

/// Kill -9 of `till up` while 8 clients make 200 payouts and the saga sends them (the
/// rail's webhooks arriving too), then a restart: every payout the clients asked for
/// exists once (their retries ride through the restart with the same Idempotency-Key),
/// ends `paid`, has exactly one payment at the rail (the simulator, which lives on), and
/// the ledger and the payout invariants hold: no hold open on a paid payout, nothing
/// paid twice.
fn payouts_survive_a_kill(rail: &PayoutRail) {
    const CLIENTS: usize = 8;
    const EACH: usize = 25;
    let amount = rail.amount;
    let data_dir = temp_dir(&format!("payouts-kill-{}", rail.name));
    let (mut sim, sim_base, _) = start_sim();
    let start = |port: u16| {
        let mut command = till();
        command.env("TILL_DATA_DIR", &data_dir);
        for (name, value) in rail.env {
            match value.strip_prefix('=') {
                Some(value) => command.env(name, value),
                None => command.env(name, format!("{sim_base}{value}")),
            };
        }
        command
            .env("TILL_PAYOUTS_POLL_MS", "100,200,500")
            .env("TILL_PAYOUTS_LEASE_SECONDS", "2")
            .env("TILL_RATE_LIMIT_PER_SECOND", "100000")
            .env("TILL_RATE_LIMIT_BURST", "100000");
        start_up(command, port)
    };
    let running = start(0);
    let port = running.port;
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let key = match rail.country {
        None => api_key_in(&running.output).expect("the demo business's key"),
        Some(country) => runtime.block_on(async {
            let token = std::fs::read_to_string(data_dir.join("admin-token")).expect("the admin token");
            let created: serde_json::Value = client
                .post(format!("{base}/v1/platform/businesses"))
                .bearer_auth(token.trim())
                .header("Idempotency-Key", "chaos-business")
                .json(&serde_json::json!({"legal_name": "Chaos Traders Pvt Ltd", "country": country}))
                .send()
                .await
                .expect("a business")
                .json()
                .await
                .expect("json");
            created["api_key"]["secret"].as_str().expect("its key").to_string()
        }),
    };
    // The rail's webhooks come to this Till, and to the one that replaces it on its port.
    let target = serde_json::json!({"provider": rail.name, "url": format!("{base}{}", rail.webhook.1),
                                    "secret": rail.webhook.0});
    let response =
        runtime.block_on(async { client.post(format!("{sim_base}/_sim/webhooks")).json(&target).send().await });
    assert!(response.expect("webhook target").status().is_success());
    let get = |path: String| {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let response = client.get(format!("{base}{path}")).bearer_auth(&key).send().await;
                match response {
                    Ok(response) if response.status().as_u16() == 200 => {
                        return response.json::<serde_json::Value>().await.expect("json");
                    }
                    other => {
                        assert!(Instant::now() < deadline, "GET {path}: {other:?}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
    };
    let post = {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        move |path: &'static str, idempotency: String, body: serde_json::Value| {
            let (client, base, key) = (client.clone(), base.clone(), key.clone());
            async move {
                client
                    .post(format!("{base}{path}"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", idempotency)
                    .json(&body)
                    .send()
                    .await
            }
        }
    };
    let available = |balance: &serde_json::Value| {
        balance["available"]
            .as_array()
            .and_then(|amounts| amounts.iter().find(|amount| amount["currency"] == rail.currency))
            .and_then(|amount| amount["amount"].as_i64())
            .unwrap_or(0)
    };
    // Funds: a captured payment, paid out by the simulator's gateway and reconciled.
    let (funded, beneficiary) = runtime.block_on(async {
        let paid = post("/v1/payment_intents", "fund".into(), rail.funding.clone()).await.expect("pay");
        assert!(matches!(paid.status().as_u16(), 201 | 202), "{:?}", paid.status());
        let intent: serde_json::Value = paid.json().await.expect("json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(format!("/v1/payment_intents/{}", intent["id"].as_str().expect("id"))).await["status"] != "succeeded"
        {
            assert!(Instant::now() < deadline, "the funding payment never succeeded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let settle = client.post(format!("{sim_base}/_sim/{}/settle", rail.gateway)).send().await.expect("settle");
        assert_eq!(settle.status().as_u16(), 200);
        let funded = loop {
            let funded = available(&get("/v1/balance".into()).await);
            if funded > 0 {
                break funded;
            }
            assert!(Instant::now() < deadline, "never funded");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(funded >= amount * i64::try_from(CLIENTS * EACH).expect("count"), "{funded} covers the payouts");
        let created = post("/v1/beneficiaries", "ben".into(), rail.beneficiary.clone()).await.expect("beneficiary");
        assert_eq!(created.status().as_u16(), 201);
        let id = created.json::<serde_json::Value>().await.expect("json")["id"].as_str().expect("id").to_string();
        (funded, id)
    });

    // The load: each client makes its payouts, retrying each with its own key until it
    // has an answer, as a client must when the server goes away.
    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let currency = rail.currency;
    let load = runtime.spawn({
        let (post, beneficiary, made) = (post.clone(), beneficiary.clone(), made.clone());
        async move {
            let clients = (0..CLIENTS).map(|n| {
                let (post, beneficiary, made) = (post.clone(), beneficiary.clone(), made.clone());
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..EACH {
                        let body = serde_json::json!({"beneficiary_id": beneficiary, "amount": amount,
                                                      "currency": currency,
                                                      "reference": format!("CHAOS {n:02} {i:02}")});
                        let deadline = Instant::now() + Duration::from_secs(120);
                        loop {
                            assert!(Instant::now() < deadline, "payout {n}/{i} never answered");
                            match post("/v1/payouts", format!("chaos-{n}-{i}"), body.clone()).await {
                                Ok(response) if response.status().as_u16() == 201 => {
                                    let created: serde_json::Value = response.json().await.expect("json");
                                    ids.push(created["id"].as_str().expect("id").to_string());
                                    made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    break;
                                }
                                // Down, restarting, or the key still held by the dead
                                // process's transaction: try again with the same key.
                                _ => tokio::time::sleep(Duration::from_millis(200)).await,
                            }
                        }
                    }
                    ids
                })
            });
            let mut ids = Vec::new();
            for client in clients.collect::<Vec<_>>() {
                ids.extend(client.await.expect("client"));
            }
            ids
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while made.load(std::sync::atomic::Ordering::SeqCst) < 60 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = running.child;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    eprintln!("payouts made before the kill: {}", made.load(std::sync::atomic::Ordering::SeqCst));
    let running = start(port);
    let ids = runtime.block_on(load).expect("load");
    assert_eq!(ids.len(), CLIENTS * EACH);

    runtime.block_on(async {
        // Every payout reaches `paid`: the saga retakes what the dead one leased.
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut payouts: Vec<serde_json::Value>;
        loop {
            payouts = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let path = match &after {
                    Some(cursor) => format!("/v1/payouts?limit=100&starting_after={cursor}"),
                    None => "/v1/payouts?limit=100".to_string(),
                };
                let page = get(path).await;
                payouts.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(cursor) => after = Some(cursor.to_string()),
                    None => break,
                }
            }
            if payouts.len() == CLIENTS * EACH && payouts.iter().all(|payout| payout["status"] == "paid") {
                break;
            }
            let open: Vec<&serde_json::Value> = payouts.iter().filter(|payout| payout["status"] != "paid").collect();
            assert!(
                Instant::now() < deadline,
                "{} payouts, {} not paid, as {:?}",
                payouts.len(),
                open.len(),
                open.first()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut listed: Vec<String> =
            payouts.iter().map(|payout| payout["id"].as_str().expect("id").to_string()).collect();
        listed.sort();
        let mut asked = ids.clone();
        asked.sort();
        assert_eq!(listed, asked, "one payout per client request, none lost, none twice");
        // One payment at the rail per payout, the one Till recorded.
        for payout in &payouts {
            let rail_id = payout["rail_payout_id"].as_str().expect("rail id");
            let object: serde_json::Value = client
                .get(format!("{sim_base}/_sim/{}/objects/{rail_id}", rail.name))
                .send()
                .await
                .expect("object")
                .json()
                .await
                .expect("json");
            assert_eq!(
                (object["status"].as_str(), object[rail.echo].as_str()),
                (Some(rail.paid), payout["id"].as_str())
            );
        }
        let calls: serde_json::Value = client
            .get(format!("{sim_base}/_sim/calls?provider={}", rail.name))
            .send()
            .await
            .expect("calls")
            .json()
            .await
            .expect("json");
        let nonces: std::collections::BTreeSet<String> = calls["data"]
            .as_array()
            .expect("calls")
            .iter()
            .filter(|call| call["operation"] == "create")
            .filter_map(|call| call["idempotency_key"].as_str().map(str::to_string))
            .collect();
        assert_eq!(nonces.len(), CLIENTS * EACH, "each payout was sent under its own key, and only it");
        let balance = get("/v1/balance".into()).await;
        assert_eq!(available(&balance), funded - amount * i64::try_from(CLIENTS * EACH).expect("count"));
        let ledger = get("/v1/ledger/check".into()).await;
        assert_eq!(ledger["ok"], true, "{ledger}");
        let report = get("/v1/payouts/check".into()).await;
        assert_eq!(report["ok"], true, "{report}");
    });
    stop(running, Signal::SIGTERM);
    let _ = sim.kill();
    let _ = sim.wait();
    let pg_dir = cluster_dir(&data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
}

/// Kill -9 of `till up` while 8 clients check out, each retrying its own checkout with
/// its own key until it has an answer, then a restart: every order ends `paid`, once,
/// with one captured payment and one invoice each, the invoice numbers consecutive, the
/// stock sold exactly once per order, and the ledger and payment invariants holding.
#[test]
fn a_killed_till_up_ends_every_checkout_paid_once_with_its_invoice() {
    const CLIENTS: usize = 8;
    const EACH: usize = 10;
    const STOCK: i64 = 1_000;
    let data_dir = temp_dir("checkout-kill");
    let (mut sim, sim_base, _) = start_sim();
    let start = |port: u16| {
        let mut command = till();
        command
            .env("TILL_DATA_DIR", &data_dir)
            .env("TILL_STRIPE_BASE_URL", format!("{sim_base}/stripe/"))
            .env("TILL_STRIPE_SECRET_KEY", "sk_test_chaos")
            .env("TILL_RECOVERY_LEASE_SECONDS", "3")
            .env("TILL_RECOVERY_GRACE_SECONDS", "1")
            .env("TILL_CHECKOUT_LEASE_SECONDS", "2")
            .env("TILL_RATE_LIMIT_PER_SECOND", "100000")
            .env("TILL_RATE_LIMIT_BURST", "100000");
        start_up(command, port)
    };
    let running = start(0);
    let port = running.port;
    let key = api_key_in(&running.output).expect("the demo business's key");
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let send = {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        move |method: reqwest::Method, path: String, idempotency: String, body: serde_json::Value| {
            let (client, base, key) = (client.clone(), base.clone(), key.clone());
            async move {
                client
                    .request(method, format!("{base}{path}"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", idempotency)
                    .json(&body)
                    .send()
                    .await
            }
        }
    };
    let product = runtime.block_on(async {
        let settings = serde_json::json!({"address": ["1 Chaos Street", "London"]});
        let put = send(reqwest::Method::PUT, "/v1/invoice_settings".into(), "settings".into(), settings).await;
        assert_eq!(put.expect("settings").status().as_u16(), 200);
        let body = serde_json::json!({"name": "Chaos mug", "sku": "CHAOS-MUG", "tax_treatment": "standard",
                                      "prices": [{"currency": "GBP", "unit_amount": 1000, "tax_inclusive": true}]});
        let created =
            send(reqwest::Method::POST, "/v1/products".into(), "product".into(), body).await.expect("product");
        assert_eq!(created.status().as_u16(), 201);
        let product: serde_json::Value = created.json().await.expect("json");
        let stock = serde_json::json!({"delta": STOCK, "reason": "count"});
        let adjusted =
            send(reqwest::Method::POST, "/v1/inventory/CHAOS-MUG/adjustments".into(), "stock".into(), stock).await;
        assert_eq!(adjusted.expect("stock").status().as_u16(), 201);
        product["id"].as_str().expect("id").to_string()
    });

    let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = runtime.spawn({
        let (send, product, made) = (send.clone(), product.clone(), made.clone());
        async move {
            let clients = (0..CLIENTS).map(|n| {
                let (send, product, made) = (send.clone(), product.clone(), made.clone());
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in 0..EACH {
                        let body = serde_json::json!({"lines": [{"product_id": product, "quantity": 1}],
                            "customer": {"name": format!("Buyer {n} {i}"), "email": "buyer@example.com",
                                         "address": ["2 Low Road"], "country": "GB"},
                            "payment_method": "pm_card_visa"});
                        let deadline = Instant::now() + Duration::from_secs(120);
                        loop {
                            assert!(Instant::now() < deadline, "checkout {n}/{i} never answered");
                            let path = String::from("/v1/checkouts");
                            match send(reqwest::Method::POST, path, format!("chaos-{n}-{i}"), body.clone()).await {
                                Ok(response) if response.status().as_u16() == 201 => {
                                    let created: serde_json::Value = response.json().await.expect("json");
                                    ids.push(created["id"].as_str().expect("id").to_string());
                                    made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                    break;
                                }
                                // Down, restarting, or the key still held: the same key again.
                                _ => tokio::time::sleep(Duration::from_millis(200)).await,
                            }
                        }
                    }
                    ids
                })
            });
            let mut ids = Vec::new();
            for client in clients.collect::<Vec<_>>() {
                ids.extend(client.await.expect("client"));
            }
            ids
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while made.load(std::sync::atomic::Ordering::SeqCst) < 25 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut child = running.child;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    eprintln!("checkouts made before the kill: {}", made.load(std::sync::atomic::Ordering::SeqCst));
    let running = start(port);
    let ids = runtime.block_on(load).expect("load");
    assert_eq!(ids.len(), CLIENTS * EACH);

    runtime.block_on(async {
        let get = |path: String| {
            let (client, base, key) = (client.clone(), base.clone(), key.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let response = client.get(format!("{base}{path}")).bearer_auth(&key).send().await;
                    match response {
                        Ok(response) if response.status().as_u16() == 200 => {
                            return response.json::<serde_json::Value>().await.expect("json");
                        }
                        other => {
                            assert!(Instant::now() < deadline, "GET {path}: {other:?}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        };
        let all = |path: &'static str| async move {
            let mut rows = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = match &after {
                    Some(cursor) => get(format!("{path}?limit=100&starting_after={cursor}")).await,
                    None => get(format!("{path}?limit=100")).await,
                };
                rows.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(cursor) => after = Some(cursor.to_string()),
                    None => return rows,
                }
            }
        };
        // Every order ends paid: the saga retakes what the dead one leased, and payments
        // resumes or replays each step's call under its key.
        let deadline = Instant::now() + Duration::from_secs(90);
        let orders = loop {
            let orders = all("/v1/orders").await;
            if orders.len() == CLIENTS * EACH && orders.iter().all(|order| order["status"] == "paid") {
                break orders;
            }
            let open: Vec<&serde_json::Value> = orders.iter().filter(|order| order["status"] != "paid").collect();
            assert!(
                Instant::now() < deadline,
                "{} orders, {} not paid, as {:?}",
                orders.len(),
                open.len(),
                open.first()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let mut listed: Vec<String> =
            orders.iter().map(|order| order["id"].as_str().expect("id").to_string()).collect();
        listed.sort();
        let mut asked = ids.clone();
        asked.sort();
        assert_eq!(listed, asked, "one order per client request, none lost, none twice");
        // One payment per order, captured; none left authorised or made twice.
        let intents = all("/v1/payment_intents").await;
        assert_eq!(intents.len(), CLIENTS * EACH, "one intent per order");
        assert!(intents.iter().all(|intent| intent["status"] == "succeeded" && intent["amount_received"] == 1000));
        let mut paid_by: Vec<&str> = orders.iter().filter_map(|order| order["payment_intent_id"].as_str()).collect();
        paid_by.sort_unstable();
        paid_by.dedup();
        assert_eq!(paid_by.len(), CLIENTS * EACH);
        // One invoice per order, numbered 1 to N with no gap.
        let invoices = all("/v1/invoices").await;
        let mut numbers: Vec<String> =
            invoices.iter().map(|invoice| invoice["number"].as_str().expect("number").to_string()).collect();
        numbers.sort();
        let expected: Vec<String> = (1..=CLIENTS * EACH).map(|n| format!("INV-{n:06}")).collect();
        assert_eq!(numbers, expected);
        let stock = get("/v1/inventory/CHAOS-MUG".into()).await;
        let sold = i64::try_from(CLIENTS * EACH).expect("count");
        assert_eq!((stock["on_hand"].as_i64(), stock["reserved"].as_i64()), (Some(STOCK - sold), Some(0)));
        let ledger = get("/v1/ledger/check".into()).await;
        assert_eq!(ledger["ok"], true, "{ledger}");
        let payments = get("/v1/payments/check".into()).await;
        assert_eq!(payments["ok"], true, "{payments}");
    });
    stop(running, Signal::SIGTERM);
    let _ = sim.kill();
    let _ = sim.wait();
    let pg_dir = cluster_dir(&data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
}

/// Kill -9 of `till up` while 8 clients take card payments, each with its own customer,
/// and receipts go out to a real SMTP server (aiosmtpd), then a restart: every captured
/// payment's customer gets its receipt, once — distinct Message-IDs, one per
/// notification, and a second copy only of a notification Till counted `in_doubt` (the
/// kill fell between the server's 250 and Till's record of it) — and every captured
/// payment is an Opportunity in the (simulated) Salesforce org, with its amount.
#[test]
fn a_killed_till_up_sends_every_receipt_once_and_mirrors_every_payment() {
    let data_dir = temp_dir("notify-kill");
    let (mut sim, sim_base, _) = start_sim();
    let smtp = till_testkit::smtp::SmtpServer::start().expect("aiosmtpd");
    let start = |port: u16| {
        let mut command = till();
        command
            .env("TILL_DATA_DIR", &data_dir)
            .env("TILL_STRIPE_BASE_URL", format!("{sim_base}/stripe/"))
            .env("TILL_STRIPE_SECRET_KEY", "sk_test_chaos")
            .env("TILL_STRIPE_WEBHOOK_SECRET", "whsec_chaos")
            .env("TILL_SMTP_URL", smtp.url())
            .env("TILL_NOTIFY_LEASE_SECONDS", "3")
            .env("TILL_SALESFORCE_INSTANCE_URL", format!("{sim_base}/salesforce/"))
            .env("TILL_SALESFORCE_CLIENT_ID", "3MVG9chaos")
            .env("TILL_SALESFORCE_CLIENT_SECRET", till_sim::salesforce::CLIENT_SECRET)
            .env("TILL_RECOVERY_LEASE_SECONDS", "3")
            .env("TILL_RECOVERY_GRACE_SECONDS", "1")
            .env("TILL_RATE_LIMIT_PER_SECOND", "100000")
            .env("TILL_RATE_LIMIT_BURST", "100000");
        start_up(command, port)
    };
    let running = start(0);
    let port = running.port;
    let key = api_key_in(&running.output).expect("the demo business's key");
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");

    let stop_at = Instant::now() + Duration::from_millis(2_500);
    let load = runtime.spawn({
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        async move {
            let clients = (0..8).map(|n| {
                let (client, base, key) = (client.clone(), base.clone(), key.clone());
                tokio::spawn(async move {
                    let mut round = 0;
                    while Instant::now() < stop_at {
                        round += 1;
                        let body = serde_json::json!({"amount": 500 + n, "currency": "GBP", "payment_method": "pm_card_visa",
                                                      "confirm": true, "customer_email": format!("c{n}-{round}@example.com")});
                        let _ = client
                            .post(format!("{base}/v1/payment_intents"))
                            .bearer_auth(&key)
                            .header("Idempotency-Key", uuid::Uuid::now_v7().to_string())
                            .json(&body)
                            .send()
                            .await;
                    }
                })
            });
            for client in clients.collect::<Vec<_>>() {
                let _ = client.await;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let mut child = running.child;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let _ = runtime.block_on(load);

    let running = start(port);
    runtime.block_on(async {
        let get = |path: String| {
            let (client, base, key) = (client.clone(), base.clone(), key.clone());
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let response = client.get(format!("{base}{path}")).bearer_auth(&key).send().await.expect("get");
                    let status = response.status().as_u16();
                    let body = response.json::<serde_json::Value>().await.expect("json");
                    if status == 503 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    assert_eq!(status, 200, "GET {path}: {body}");
                    return body;
                }
            }
        };
        let all = |path: &'static str| async move {
            let mut items = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = match &after {
                    Some(cursor) => get(format!("{path}?limit=100&starting_after={cursor}")).await,
                    None => get(format!("{path}?limit=100")).await,
                };
                items.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(cursor) => after = Some(cursor.to_string()),
                    None => return items,
                }
            }
        };
        // Settled: no payment processing (the recovery job finishes those the kill cut
        // short), every captured one with its notification, none of them queued — seen
        // twice a second apart.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut quiet = 0;
        let (intents, notifications) = loop {
            let intents = all("/v1/payment_intents").await;
            let notifications = all("/v1/notifications").await;
            let processing = intents.iter().filter(|intent| intent["status"] == "processing").count();
            let succeeded = intents.iter().filter(|intent| intent["status"] == "succeeded").count();
            let queued = notifications.iter().filter(|notification| notification["status"] == "queued").count();
            if processing == 0 && queued == 0 && notifications.len() == succeeded {
                quiet += 1;
                if quiet >= 2 {
                    break (intents, notifications);
                }
            } else {
                quiet = 0;
            }
            assert!(
                Instant::now() < deadline,
                "not settled: {processing} processing, {succeeded} succeeded, {} notifications, {queued} queued",
                notifications.len()
            );
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        };
        let succeeded: Vec<&serde_json::Value> =
            intents.iter().filter(|intent| intent["status"] == "succeeded").collect();
        assert!(succeeded.len() >= 8, "the load took payments: {}", succeeded.len());
        eprintln!("captured payments: {}, notifications: {}", succeeded.len(), notifications.len());
        for notification in &notifications {
            assert_eq!(notification["status"], "sent", "{notification}");
        }
        let in_doubt: i64 =
            notifications.iter().map(|notification| notification["in_doubt"].as_i64().unwrap_or(0)).sum();
        let received = smtp.received();
        let mut message_ids: Vec<&str> = received.iter().filter_map(|message| message.header("Message-ID")).collect();
        message_ids.sort_unstable();
        message_ids.dedup();
        assert_eq!(message_ids.len(), notifications.len(), "one message per notification");
        assert!(
            received.len() as i64 <= notifications.len() as i64 + in_doubt,
            "{} messages for {} notifications, {in_doubt} in doubt",
            received.len(),
            notifications.len()
        );
        // The CRM: every captured payment's Opportunity in the org, and nothing left queued.
        let deadline = Instant::now() + Duration::from_secs(60);
        for intent in &succeeded {
            let id = intent["id"].as_str().expect("id");
            let url = format!("{sim_base}/_sim/salesforce/objects/Opportunity:Till_Payment_Id__c:{id}");
            loop {
                let response = client.get(&url).send().await.expect("get");
                if response.status().as_u16() == 200 {
                    let opportunity: serde_json::Value = response.json().await.expect("json");
                    let pence = intent["amount_received"].as_i64().expect("amount");
                    let expected: serde_json::Value =
                        serde_json::from_str(&format!("{}.{:02}", pence / 100, pence % 100)).expect("a number");
                    assert_eq!(opportunity["Amount"], expected, "{opportunity}");
                    break;
                }
                assert!(Instant::now() < deadline, "no Opportunity for {id}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for intent in succeeded {
            let customer = intent["customer_email"].as_str().expect("customer");
            let to_them: Vec<_> = received.iter().filter(|message| message.rcpt_to == [customer]).collect();
            assert!(!to_them.is_empty(), "no receipt for {intent}");
            let id = intent["id"].as_str().expect("id");
            assert!(to_them.iter().all(|message| message.parts["text/plain"].contains(id)), "{customer}");
        }
    });
    stop(running, Signal::SIGTERM);
    // `till crm status` on the same data: nothing left, nothing parked.
    let status = till().args(["crm", "status"]).env("TILL_DATA_DIR", &data_dir).output().expect("till crm status");
    let printed = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success(), "{printed} {}", String::from_utf8_lossy(&status.stderr));
    assert!(printed.contains("pending: 0") && printed.contains("parked: 0"), "{printed}");
    let _ = sim.kill();
    let _ = sim.wait();
    let pg_dir = cluster_dir(&data_dir);
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_dir_all(&pg_dir);
}
