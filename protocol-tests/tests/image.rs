//! The container image (scripts/build-image), checked without a Docker engine: skopeo reads
//! the OCI archive, umoci unpacks it, and the unpacked root file system (nothing but
//! kferry's files: no shell, no libc) runs `kferry --version` and a real replication
//! between the test clusters with `chroot`, bootstrap servers given as host names.
//!
//! `scripts/test` builds the static binary and the image and names the tarball in
//! `KFERRY_TEST_IMAGE`; skopeo and umoci come from scripts/setup. A missing tool or image
//! fails the test: a skipped image test would pass without testing anything.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use protocol_tests::{
    create_topic, primary, produce, secondary, unique_flow_config, unique_name, wait_until_replicated,
};

/// The files of the image, and nothing else.
const IMAGE_FILES: [&str; 7] =
    ["etc", "etc/group", "etc/passwd", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca-certificates.crt", "kferry"];
/// The user the image runs as (scripts/build-image).
const IMAGE_USER: &str = "65532:65532";

fn image() -> PathBuf {
    let path = std::env::var("KFERRY_TEST_IMAGE").unwrap_or_else(|_| {
        panic!("KFERRY_TEST_IMAGE is not set: ./scripts/test builds the image (scripts/build-image) and sets it")
    });
    let path = PathBuf::from(path);
    assert!(path.is_file(), "KFERRY_TEST_IMAGE={}: no such file", path.display());
    path
}

/// The absolute path of `name` (the chroot'ed command runs with an empty environment, so
/// no PATH lookup can find it later).
fn tool(name: &str) -> String {
    let found = std::process::Command::new("sh").args(["-c", &format!("command -v {name}")]).output();
    let path = found.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match path {
        Some(path) if path.starts_with('/') => path,
        _ => panic!("{name} is not installed: run scripts/setup (it installs skopeo and umoci; chroot and unshare come with coreutils and util-linux)"),
    }
}

/// Runs a command to its end (bounded) and returns its stdout; fails the test otherwise.
async fn run(program: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(tool(program)).args(args).kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{program} {args:?} still running after 60 s"))
    .unwrap_or_else(|e| panic!("{program} does not start: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?}: {}\n{stderr}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory removed when dropped, also when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unpacks the image with umoci into `dir`; returns the root file system's path.
async fn unpack(dir: &TempDir) -> PathBuf {
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run("tar", &["-xf", image().to_str().unwrap(), "-C", layout.to_str().unwrap()]).await;
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str().expect("a tag");
    let bundle = dir.join("bundle");
    let image_ref = format!("{}:{tag}", layout.display());
    let mut args = vec!["unpack", "--image", image_ref.as_str(), bundle.to_str().unwrap()];
    if !is_root() {
        args.insert(1, "--rootless");
    }
    run("umoci", &args).await;
    bundle.join("rootfs")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Every path under `root`, relative, sorted.
fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `kferry ARGS` inside `rootfs`: as the image's user where the test runs as root, else in
/// a user namespace (`unshare -r`), which lets an unprivileged user chroot.
fn in_rootfs(rootfs: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = if is_root() {
        let mut c = tokio::process::Command::new(tool("chroot"));
        c.arg(format!("--userspec={IMAGE_USER}"));
        c
    } else {
        let mut c = tokio::process::Command::new(tool("unshare"));
        c.args(["-r", "chroot"]);
        c
    };
    // An empty environment, as a container starts with: nothing of the host leaks in.
    command.env_clear().env("KFERRY_LOG", "info").arg(rootfs).arg("/kferry").args(args).kill_on_drop(true);
    command
}

/// Whether the ELF64 executable `elf` has a PT_INTERP program header (a dynamic loader),
/// which is what `ldd` looks for; an empty root file system has no loader to run it with.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(elf.get(..5), Some(&b"\x7fELF\x02"[..]), "not an ELF64 file");
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_and_umoci_accept_the_image_and_it_holds_only_kferrys_files() {
    let archive = format!("oci-archive:{}", image().display());
    let inspected: serde_json::Value = serde_json::from_str(&run("skopeo", &["inspect", &archive]).await).unwrap();
    assert_eq!((inspected["Os"].as_str(), inspected["Architecture"].as_str()), (Some("linux"), Some("amd64")));
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1), "{inspected}");
    let config: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--config", &archive]).await).unwrap();
    assert_eq!(config["config"]["User"], IMAGE_USER, "runs as a non-root user: {config}");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/kferry"]));
    // The Docker archive form (what `docker load` reads) converts from it too.
    let dir = TempDir::new("kferry-image");
    let docker_archive = format!("docker-archive:{}:kferry:test", dir.join("docker.tar").display());
    run("skopeo", &["copy", "--quiet", &archive, &docker_archive]).await;

    let rootfs = unpack(&dir).await;
    assert_eq!(files(&rootfs), IMAGE_FILES, "the image holds kferry's files and nothing else");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("kferry:x:65532:65532:"), "{passwd}");
    let elf = std::fs::read(rootfs.join("kferry")).unwrap();
    assert!(!has_interpreter(&elf), "kferry names a dynamic loader (PT_INTERP): it is not static");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unpacked_root_replicates_between_the_test_clusters_by_host_name() {
    let dir = TempDir::new("kferry-image-run");
    let rootfs = unpack(&dir).await;
    let version = in_rootfs(&rootfs, &["--version"]).output().await.expect("chroot runs");
    assert!(version.status.success(), "{}", String::from_utf8_lossy(&version.stderr));
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("kferry {}", env!("CARGO_PKG_VERSION")));

    // Host names, as in a container: the runtime mounts an /etc/hosts (here written into
    // the unpacked copy); `localhost` resolves without any file.
    let port = |address: String| address.rsplit_once(':').map(|(_, p)| p.to_owned()).expect("host:port");
    let (primary_port, secondary_port) = (port(primary()), port(secondary()));
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1 kafka-primary.kferry.test\n").unwrap();
    let topic = unique_name("image-orders");
    let config = unique_flow_config(&format!("    topics: [\"{topic}\"]\n"))
        .replacen(&primary(), &format!("kafka-primary.kferry.test:{primary_port}"), 1)
        .replacen(&secondary(), &format!("localhost:{secondary_port}"), 1);
    std::fs::write(rootfs.join("kferry.yaml"), &config).unwrap();
    assert!(!config.contains("127.0.0.1"), "{config}");

    create_topic(&primary(), &topic, 2, &[]).await;
    produce(&primary(), &topic, 500, "zstd", &[]).await;
    let child = in_rootfs(&rootfs, &["run", "--config", "/kferry.yaml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kferry starts in the unpacked root");
    let running = RunningKferry::new(child);
    // confluent-kafka reads the target: kferry does not grade itself.
    let records = wait_until_replicated(&topic, 500).await;
    assert_eq!(records.len(), 500);
    let stderr = running.stop().await;
    assert!(!stderr.contains(" ERROR "), "{stderr}");
}

/// The kferry process in the chroot; killed when dropped (kill_on_drop), also on failure.
/// Its standard error is drained as it comes (a full pipe would block it).
struct RunningKferry {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl RunningKferry {
    fn new(mut child: tokio::process::Child) -> Self {
        let mut pipe = child.stderr.take().expect("stderr piped");
        let stderr = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut pipe, &mut text).await;
            String::from_utf8_lossy(&text).into_owned()
        });
        Self { child, stderr }
    }

    async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let stderr = tokio::time::timeout(Duration::from_secs(5), &mut self.stderr).await;
        let stderr = stderr.ok().and_then(Result::ok).unwrap_or_default();
        assert!(matches!(status, Ok(Ok(s)) if s.success()), "kferry did not stop cleanly: {status:?}\n{stderr}");
        stderr
    }
}
