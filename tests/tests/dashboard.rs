//! The web dashboard in a real browser: a broker with its management listener, a queue with
//! messages and a running calculator service; headless Chromium logs in, opens every page by
//! clicking the navigation, and checks what each shows: the queue with its depth, a purge
//! clicked on its page empties it (checked over AMQP too), a message published from its form
//! is got back from the get form, the connections, exchanges, users
//! and vhosts, and the RPC page listing the service, whose `add` method, called from the form
//! built from `$describe`, shows the reply. A screenshot of each page is saved under
//! `target/dashboard-screenshots/`.
//!
//! Skipped (with a message) only if Chromium is neither installed nor installable.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::path::PathBuf;
use warren_broker::Broker;
use warren_tests::browser::{find_or_install_chromium, Browser, Page};
use warren_tests::rpc_support::calculator_at;
use warren_tests::unique;

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("dashboard-screenshots")
}

/// Saves a screenshot of the page and prints where.
async fn shot(page: &mut Page<'_>, name: &str) {
    let path = screenshots_dir().join(format!("{name}.png"));
    page.screenshot(&path).await.expect("screenshot");
    println!("screenshot: {}", path.display());
}

/// Clicks a navigation link and waits until that page has rendered.
async fn open(page: &mut Page<'_>, name: &str) {
    page.click(&format!("#nav a[data-page={name}]"))
        .await
        .expect("nav link");
    page.wait_for(&format!(
        "document.querySelector('#main').dataset.page === '{name}' && !!document.querySelector('#main h1')"
    ))
    .await
    .unwrap_or_else(|e| panic!("page {name}: {e}"));
}

/// The text of the first element `selector` matches, once it has some.
async fn text(page: &mut Page<'_>, selector: &str) -> String {
    let sel = serde_json::to_string(selector).unwrap();
    let v = page
        .wait_for(&format!(
            "(document.querySelector({sel}) || {{}}).innerText"
        ))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"));
    v.as_str().unwrap_or_default().to_string()
}

/// Waits until the element `selector` matches reads `expected` (pages refresh every 5 s).
async fn wait_text(page: &mut Page<'_>, selector: &str, expected: &str) {
    let sel = serde_json::to_string(selector).unwrap();
    let want = serde_json::to_string(expected).unwrap();
    page.wait_for(&format!(
        "(document.querySelector({sel}) || {{}}).innerText === {want}"
    ))
    .await
    .unwrap_or_else(|e| panic!("{selector} should read {expected}: {e}"));
}

async fn queue_with_messages(url: &str, queue: &str, n: usize) -> Connection {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            format!("message {i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    conn
}

async fn depth(conn: &Connection, queue: &str) -> u32 {
    let ch = conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .unwrap();
    q.message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_in_headless_chromium() {
    let Some(chromium) = find_or_install_chromium() else {
        println!("dashboard test skipped: chromium is not installed and cannot be installed");
        return;
    };
    let broker = Broker::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .management("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .expect("broker");
    let base = format!(
        "http://{}/",
        broker.management_addr().expect("management on")
    );
    let url = broker.amqp_url();
    let queue = unique("dash-queue");
    let conn = queue_with_messages(&url, &queue, 3).await;
    let (server, client, calc, service) = calculator_at(&url).await;
    assert_eq!(calc.add(2, 3).await.expect("a call through the broker"), 5);

    let mut browser = Browser::launch(&chromium).await.expect("chromium");
    let mut page = browser.new_page(1280, 900).await.expect("tab");
    page.goto(&base).await.expect("dashboard loads");
    page.type_into("#login input[name=username]", "guest")
        .await
        .unwrap();
    page.type_into("#login input[name=password]", "guest")
        .await
        .unwrap();
    page.click("#login button[type=submit]").await.unwrap();
    wait_text(&mut page, "#who-name", "guest").await;

    // Overview: totals and the charts.
    let queues = text(&mut page, "#total-queues b").await;
    assert!(
        queues.parse::<u32>().unwrap() >= 2,
        "queues on the overview: {queues}"
    );
    page.wait_for("!!document.querySelector('#chart-rates')")
        .await
        .unwrap();
    shot(&mut page, "overview").await;

    // RPC: the service with its server and traffic, then a call from the method form.
    open(&mut page, "rpc").await;
    let row = format!("#services tr[data-name='{service}']");
    wait_text(&mut page, &format!("{row} td.servers"), "1").await;
    let requests = text(&mut page, &format!("{row} td.requests")).await;
    assert!(
        requests.parse::<u64>().unwrap() >= 1,
        "requests: {requests}"
    );
    shot(&mut page, "rpc").await;
    page.click(&row).await.unwrap();
    let add = "details.method[data-method=add]";
    page.click(&format!("{add} summary")).await.unwrap();
    page.type_into(&format!("{add} input[data-param=a]"), "2")
        .await
        .unwrap();
    page.type_into(&format!("{add} input[data-param=b]"), "40")
        .await
        .unwrap();
    page.click(&format!("{add} button[type=submit]"))
        .await
        .unwrap();
    let reply = text(&mut page, &format!("{add} pre.reply-json")).await;
    let reply: Value = serde_json::from_str(&reply).expect("the reply is shown as JSON");
    assert_eq!(reply, serde_json::json!({"ok": 42}));
    shot(&mut page, "rpc-service").await;

    // Queues: the queue with its depth; its page; purge.
    open(&mut page, "queues").await;
    let row = format!("#queues tr[data-name='{queue}']");
    wait_text(&mut page, &format!("{row} td.messages"), "3").await;
    wait_text(&mut page, &format!("{row} td.ready"), "3").await;
    shot(&mut page, "queues").await;
    page.click(&row).await.unwrap();
    wait_text(&mut page, "#queue-messages", "3").await;
    page.click("#purge").await.unwrap();
    page.wait_for("document.querySelector('#purge').classList.contains('armed')")
        .await
        .unwrap();
    page.click("#purge").await.unwrap();
    wait_text(&mut page, "#queue-messages", "0").await;
    assert_eq!(
        depth(&conn, &queue).await,
        0,
        "the purge reached the broker"
    );
    page.type_into("#publish textarea[name=payload]", "hello from chromium")
        .await
        .unwrap();
    page.click("#publish button[type=submit]").await.unwrap();
    wait_text(&mut page, "#queue-messages", "1").await;
    page.click("#get button[type=submit]").await.unwrap();
    wait_text(&mut page, "#get-result pre.payload", "hello from chromium").await;
    assert_eq!(
        depth(&conn, &queue).await,
        1,
        "got with requeue: the message stays"
    );
    shot(&mut page, "queue").await;

    // Exchanges, connections, channels, users, vhosts.
    open(&mut page, "exchanges").await;
    text(&mut page, "#exchanges tr[data-name='amq.topic']").await;
    shot(&mut page, "exchanges").await;
    open(&mut page, "connections").await;
    let n = page
        .wait_for("document.querySelectorAll('#connections tbody tr[data-name]').length >= 3 && document.querySelectorAll('#connections tbody tr[data-name]').length")
        .await
        .expect("our test's connection, the server's and the client's");
    println!("connections listed: {n}");
    shot(&mut page, "connections").await;
    open(&mut page, "channels").await;
    page.wait_for("document.querySelectorAll('#channels tbody tr[data-name]').length >= 3")
        .await
        .unwrap();
    shot(&mut page, "channels").await;
    open(&mut page, "users").await;
    text(&mut page, "#users tr[data-name='guest']").await;
    shot(&mut page, "users").await;
    open(&mut page, "vhosts").await;
    text(&mut page, "#vhosts tr[data-name='/']").await;
    shot(&mut page, "vhosts").await;

    browser.close().await;
    server.shutdown().await;
    client.close().await;
    let _ = conn.close(200, "bye".into()).await;
    broker.shutdown().await;
}
