//! The `tollgate` command line: check, keys, demo.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tollgate_tests::*;

fn tollgate() -> Command {
    Command::new(bin_dir().join("tollgate"))
}

/// Runs `tollgate check` on a file with `content`; returns whether it passed and stderr.
fn check(dir: &TempDir, content: &str) -> (bool, String) {
    let path = dir.0.join("bad.yaml");
    std::fs::write(&path, content).unwrap();
    let out = tollgate()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_shipped_configs() {
    for file in [
        "conf/demo.yaml",
        "conf/tollgate.yaml",
        "conf/examples/providers.yaml",
    ] {
        let out = tollgate()
            .args(["check", "-c"])
            .arg(workspace_dir().join(file))
            .env("OPENAI_API_KEY", "sk-dummy")
            .env("GROQ_API_KEY", "gsk-dummy")
            .envs(
                [
                    "AZURE_OPENAI_API_KEY",
                    "ANTHROPIC_API_KEY",
                    "GEMINI_API_KEY",
                ]
                .map(|k| (k, "dummy")),
            )
            .envs([
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_names_file_line_and_key_of_every_problem() {
    let dir = TempDir::new();
    let (ok, err) = check(
        &dir,
        r#"providers:
  p: { kind: openai, endpoints: ["http://127.0.0.1:1"] }
models:
  m: { provider: p, model: x }
routes:
  - name: r
    match: { model: chat }
    targets: [{ model: nope }]
    timeouts: { connect: 2s }
"#,
    );
    assert!(!ok);
    assert!(err.contains("bad.yaml:8"), "{err}");
    assert!(err.contains("routes[0].targets[0].model"), "{err}");
    assert!(err.contains("nope"), "{err}");

    let (ok, err) = check(
        &dir,
        "server:\n  listen: [\"127.0.0.1:1\"]\n  lisen: oops\n",
    );
    assert!(!ok);
    assert!(err.contains("bad.yaml:3") && err.contains("lisen"), "{err}");

    let (ok, err) = check(
        &dir,
        "routes:\n  - name: r\n    targets: []\n    timeouts: { connect: ten seconds }\n",
    );
    assert!(!ok);
    assert!(err.contains("routes[0].timeouts.connect"), "{err}");
}

#[test]
fn keys_new_prints_a_secret_and_its_hash() {
    let out = tollgate().args(["keys", "new"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .trim();
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("hash:"))
        .unwrap()
        .trim();
    assert!(secret.starts_with("tg-") && secret.len() > 40);
    assert_eq!(hash, key_hash(secret));
}

#[tokio::test]
async fn demo_serves_the_printed_examples() {
    let port = free_port();
    let admin = free_port();
    // The demo keeps its ledger under ./data: run it where that is thrown away.
    let cwd = TempDir::new();
    let mut child = Proc(
        tollgate()
            .current_dir(&cwd.0)
            .args([
                "demo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
            ])
            .env("TOLLGATE_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(30), || async {
        client()
            .get(format!("http://127.0.0.1:{admin}/healthz"))
            .send()
            .await
            .is_ok()
    })
    .await;
    assert!(ready, "demo did not start");
    let c = client();
    let resp = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("tg-demo-key")
        .json(&json!({"model": "best-cheap-chat", "messages": [{"role": "user", "content": "Hello!"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("Tollgate"));
    let resp = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("tg-demo-key")
        .json(&json!({"model": "best-cheap-chat", "stream": true, "messages": [{"role": "user", "content": "Hello!"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(stream_text(&data).contains("Tollgate"));
    let _ = child.0.kill();
    let stdout = child.0.stdout.take().unwrap();
    let printed = std::io::read_to_string(stdout).unwrap();
    assert!(
        printed.contains("curl") && printed.contains("tg-demo-key") && printed.contains("base_url"),
        "{printed}"
    );
}
