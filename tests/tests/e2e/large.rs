//! Prompts of 1 MiB and 16 MiB route and fail over like small ones: Tollgate owns the
//! body, so Pingora's 64 KiB retry buffer does not limit retries.

use serde_json::json;
use tollgate_tests::*;

async fn large_prompt_fails_over_intact(size: usize) {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let routes = r#"
routes:
  - name: main
    match: { model: chat }
    targets: [{ model: big-a }]
    fallback: [big-b]
    retry: { attempts: 1 }
"#;
    let config = two_mock_config(&a, &b, routes).replace(
        "models:\n",
        "models:\n  big-a: { provider: a, model: upstream-a }\n  big-b: { provider: b, model: upstream-b }\n",
    );
    let gw = Gateway::start(&config).await;
    a.faults(json!([{"status": 502, "times": 1}])).await;
    let mut body = chat_body("chat");
    body["messages"][0]["content"] = json!("lorem ipsum ".repeat(size / 12));
    let resp = gw.chat(body).await;
    assert_eq!(resp.status(), 200);
    let seen_a = a.chat_requests().await;
    let seen_b = b.chat_requests().await;
    assert_eq!((seen_a.len(), seen_b.len()), (1, 1));
    // Both attempts carried the same, whole body (only `model` differs).
    let len_a = seen_a[0]["body_len"].as_u64().unwrap();
    let len_b = seen_b[0]["body_len"].as_u64().unwrap();
    assert!(
        len_a as usize >= size - 64,
        "first attempt got {len_a} bytes"
    );
    assert_eq!(len_a, len_b, "the fallback got a different body length");
}

#[tokio::test]
async fn one_mib_prompt_fails_over() {
    large_prompt_fails_over_intact(1024 * 1024).await;
}

#[tokio::test]
async fn sixteen_mib_prompt_fails_over() {
    large_prompt_fails_over_intact(16 * 1024 * 1024).await;
}
