//! A Kafka Connect worker (Apache Kafka's connect-runtime 4.3.1 in distributed mode, with the
//! file connectors; jars fetched by `verify/fetch-jars.sh connect`) for the disaster-recovery
//! drill: started on one cluster, stopped, and started on the other with the same group id
//! and the default internal topics, as an operator moves Connect at failover. Its REST API is
//! driven with curl, so nothing of kferry's is in the loop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::{crate_dir, eventually};

/// A running worker; SIGKILLed when dropped (a failing test), stopped gracefully by [`stop`].
///
/// [`stop`]: ConnectWorker::stop
pub struct ConnectWorker {
    child: tokio::process::Child,
    rest: String,
    log: PathBuf,
}

fn classpath() -> String {
    let fetch = crate_dir().join("verify/fetch-jars.sh");
    let output = std::process::Command::new(&fetch).arg("connect").output().expect("fetch-jars.sh runs");
    assert!(output.status.success(), "fetch-jars.sh connect failed:\n{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("classpath is UTF-8").trim().to_string()
}

impl ConnectWorker {
    /// Starts a worker of Connect cluster `group` on `bootstrap`, REST on 127.0.0.1:`rest_port`,
    /// its files in `dir`; returns once its REST API answers. Internal topics have Connect's
    /// default names (`connect-configs`, `connect-offsets`, `connect-status`).
    pub async fn start(bootstrap: &str, group: &str, rest_port: u16, dir: &Path, label: &str) -> Self {
        let properties = dir.join(format!("worker-{label}.properties"));
        let settings = [
            format!("bootstrap.servers={bootstrap}"),
            format!("group.id={group}"),
            "key.converter=org.apache.kafka.connect.storage.StringConverter".into(),
            "value.converter=org.apache.kafka.connect.storage.StringConverter".into(),
            "config.storage.topic=connect-configs".into(),
            "offset.storage.topic=connect-offsets".into(),
            "status.storage.topic=connect-status".into(),
            "config.storage.replication.factor=1".into(),
            "offset.storage.replication.factor=1".into(),
            "status.storage.replication.factor=1".into(),
            // Source offsets and sink positions committed every second (and at a clean stop).
            "offset.flush.interval.ms=1000".into(),
            format!("listeners=http://127.0.0.1:{rest_port}"),
            "rest.advertised.host.name=127.0.0.1".into(),
            "plugin.discovery=only_scan".into(),
        ];
        std::fs::write(&properties, settings.join("\n") + "\n").expect("worker properties written");
        let log = dir.join(format!("worker-{label}.log"));
        let log_file = std::fs::File::create(&log).expect("worker log created");
        let log4j = crate_dir().join("verify/connect/log4j.properties");
        let child = tokio::process::Command::new("java")
            .args(["-Xms64m", "-Xmx384m", "-XX:+UseSerialGC"])
            .arg(format!("-Dlog4j.configuration=file:{}", log4j.display()))
            .args(["-cp", &classpath(), "org.apache.kafka.connect.cli.ConnectDistributed"])
            .arg(&properties)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("java starts the Connect worker");
        let worker = Self { child, rest: format!("http://127.0.0.1:{rest_port}"), log };
        let what = format!("the Connect worker on {bootstrap} answering (log: {})", worker.log.display());
        eventually(&what, Duration::from_secs(120), || async { worker.get("/connectors").await.map(|_| ()) }).await;
        worker
    }

    /// GET `path`: the body when the worker answered 2xx.
    async fn get(&self, path: &str) -> Option<String> {
        let output = tokio::process::Command::new("curl")
            .args(["-sf", "--max-time", "10", &format!("{}{path}", self.rest)])
            .output()
            .await
            .expect("curl runs");
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Creates or updates connector `name` (PUT /connectors/NAME/config).
    pub async fn put_connector(&self, name: &str, config: serde_json::Value) {
        let output = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "-X", "PUT", "-H", "Content-Type: application/json"])
            .args(["--data", &config.to_string(), "-w", "\n%{http_code}"])
            .arg(format!("{}/connectors/{name}/config", self.rest))
            .output()
            .await
            .expect("curl runs");
        let answer = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(answer.ends_with("\n200") || answer.ends_with("\n201"), "PUT connector {name}: {answer}");
    }

    /// The names of the connectors the worker's cluster knows (read from `connect-configs`).
    pub async fn connectors(&self) -> Vec<String> {
        let body = self.get("/connectors").await.expect("GET /connectors answers");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /connectors: {e}: {body}"))
    }

    /// Waits until connector `name` and all its tasks (at least one) are RUNNING.
    pub async fn wait_running(&self, name: &str) {
        let what = format!("connector {name} RUNNING (log: {})", self.log.display());
        eventually(&what, Duration::from_secs(90), || async {
            let status: serde_json::Value =
                serde_json::from_str(&self.get(&format!("/connectors/{name}/status")).await?).ok()?;
            let tasks = status["tasks"].as_array()?;
            let running = |s: &serde_json::Value| s["state"] == "RUNNING";
            (running(&status["connector"]) && !tasks.is_empty() && tasks.iter().all(running)).then_some(())
        })
        .await;
    }

    /// Stops the worker as an operator does (SIGTERM: tasks stop, source offsets and sink
    /// positions are committed) and waits for it to exit.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("worker exit status");
                // 143: the JVM's exit after its shutdown hooks ran on SIGTERM.
                assert!(status.success() || status.code() == Some(143), "worker exited with {status}");
            }
            Err(_) => panic!("the Connect worker did not stop within 60 s (log: {})", self.log.display()),
        }
    }
}
