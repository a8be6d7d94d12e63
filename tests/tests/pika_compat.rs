//! A second client family: Python pika drives each target through the scenarios in
//! `tests/python/compat_pika.py` (bundled broker, and RabbitMQ when `WARREN_TEST_AMQP_URL` is
//! set). Needs `python3` with `pika`; without them the test is skipped, unless `CI` is set.

use std::path::PathBuf;
use std::process::Command;

use warren_tests::compat_test;

fn pika_available() -> Result<(), String> {
    match Command::new("python3").args(["-c", "import pika"]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "python3 cannot import pika: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("python3 not runnable: {e}")),
    }
}

compat_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pika_scenarios(target: Target) {
        if let Err(why) = pika_available() {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but pika is unavailable: {why} (pip install pika)");
            }
            println!("skipped pika scenarios: {why}");
            return;
        }
        let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "python", "compat_pika.py"]
            .iter()
            .collect();
        let url = target.url().to_string();
        let name = target.name();
        let path = script.clone();
        // The bundled broker runs on this runtime, so run python on a blocking thread.
        let out = tokio::task::spawn_blocking(move || {
            Command::new("python3")
                .arg(&path)
                .arg(&url)
                .arg(name)
                .output()
        })
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("{target}: cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}");
        if !stderr.trim().is_empty() {
            println!("stderr:\n{stderr}");
        }
        assert!(
            out.status.success(),
            "{target}: pika scenarios failed:\n{}",
            stdout
                .lines()
                .filter(|l| l.starts_with("FAIL"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
