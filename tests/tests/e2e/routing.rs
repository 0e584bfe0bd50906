//! Route matching, weighted splits, strategies and context-window checks, end to end.

use serde_json::json;
use tollgate_tests::*;

#[tokio::test]
async fn routes_match_top_down_on_header_metadata_and_team() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let routes = r#"
routes:
  - name: beta-by-header
    match: { model: chat, headers: { x-tollgate-beta: "yes" } }
    targets: [{ model: model-b }]
  - name: search-feature
    match: { model: chat, metadata: { feature: search } }
    targets: [{ model: model-b }]
  - name: guests
    match: { model: chat, team: guests }
    targets: [{ model: model-b }]
  - name: default
    match: { model: chat }
    targets: [{ model: model-a }]
"#;
    let gw = Gateway::start(&two_mock_config(&a, &b, routes)).await;
    let c = client();
    let send =
        |req: reqwest::RequestBuilder| async move { req.send().await.unwrap().status().as_u16() };

    assert_eq!(
        send(
            c.post(gw.chat_url())
                .bearer_auth(TEST_KEY)
                .json(&chat_body("chat"))
        )
        .await,
        200
    );
    assert_eq!(
        (a.chat_requests().await.len(), b.chat_requests().await.len()),
        (1, 0)
    );

    assert_eq!(
        send(
            c.post(gw.chat_url())
                .bearer_auth(TEST_KEY)
                .header("x-tollgate-beta", "yes")
                .json(&chat_body("chat"))
        )
        .await,
        200
    );
    assert_eq!(b.chat_requests().await.len(), 1);

    let mut body = chat_body("chat");
    body["metadata"] = json!({"feature": "search"});
    assert_eq!(
        send(c.post(gw.chat_url()).bearer_auth(TEST_KEY).json(&body)).await,
        200
    );
    assert_eq!(b.chat_requests().await.len(), 2);

    // The guests key may only use model-b; its team's route serves "chat" with model-b,
    // but the key's model scope names catalog models only, so "chat" is refused.
    assert_eq!(
        send(
            c.post(gw.chat_url())
                .bearer_auth(OTHER_KEY)
                .json(&chat_body("chat"))
        )
        .await,
        403
    );
    assert_eq!(a.chat_requests().await.len(), 1);
}

#[tokio::test]
async fn weighted_split_sends_traffic_to_both_targets() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let routes = r#"
routes:
  - name: split
    match: { model: chat }
    targets: [{ model: model-a, weight: 50 }, { model: model-b, weight: 50 }]
"#;
    let gw = Gateway::start(&two_mock_config(&a, &b, routes)).await;
    for _ in 0..40 {
        assert_eq!(gw.chat(chat_body("chat")).await.status(), 200);
    }
    let (na, nb) = (a.chat_requests().await.len(), b.chat_requests().await.len());
    assert_eq!(na + nb, 40);
    assert!(na >= 5 && nb >= 5, "a={na} b={nb}");
}

#[tokio::test]
async fn a_prompt_larger_than_the_context_window_skips_that_target() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let routes = r#"
routes:
  - name: small-first
    match: { model: chat }
    targets: [{ model: small-a }]
    fallback: [model-b]
  - name: small-only
    match: { model: tiny }
    targets: [{ model: small-a }]
"#;
    let gw = Gateway::start(&two_mock_config(&a, &b, routes)).await;
    assert_eq!(gw.chat(chat_body("chat")).await.status(), 200);
    assert_eq!(
        a.chat_requests().await.len(),
        1,
        "a short prompt fits small-a"
    );

    let mut long = chat_body("chat");
    long["messages"][0]["content"] = json!("lorem ipsum dolor sit amet ".repeat(40));
    assert_eq!(gw.chat(long.clone()).await.status(), 200);
    assert_eq!(
        a.chat_requests().await.len(),
        1,
        "a long prompt skips small-a"
    );
    assert_eq!(b.chat_requests().await.len(), 1);

    long["model"] = json!("tiny");
    let resp = gw.chat(long).await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");
}

#[tokio::test]
async fn cost_strategy_picks_the_cheapest_target() {
    let a = Mock::start(&[]);
    let b = Mock::start(&[]);
    let routes = r#"
routes:
  - name: cheapest
    match: { model: chat }
    strategy: cost
    targets: [{ model: priced-a }, { model: priced-b }]
"#;
    let config = two_mock_config(&a, &b, routes).replace(
        "models:\n",
        "models:\n  priced-a: { provider: a, model: pa, price: { input: 5.0, output: 15.0 } }\n  priced-b: { provider: b, model: pb, price: { input: 0.1, output: 0.4 } }\n",
    );
    let gw = Gateway::start(&config).await;
    for _ in 0..5 {
        assert_eq!(gw.chat(chat_body("chat")).await.status(), 200);
    }
    assert_eq!(
        (a.chat_requests().await.len(), b.chat_requests().await.len()),
        (0, 5)
    );
}
