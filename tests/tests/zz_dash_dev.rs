//! scratch
use warren_tests::browser::*;
#[tokio::test]
async fn dev() {
    let c = find_or_install_chromium().unwrap();
    let mut b = Browser::launch(&c).await.unwrap();
    let mut p = b.new_page(1280, 900).await.unwrap();
    let base = std::env::var("DASH").unwrap();
    p.goto(&base).await.unwrap();
    p.wait_for("document.querySelector('#login')").await.unwrap();
    p.type_into("#login input[name=username]", "guest").await.unwrap();
    p.type_into("#login input[name=password]", "guest").await.unwrap();
    p.click("#login button[type=submit]").await.unwrap();
    p.wait_for("document.querySelector('#total-queues')").await.unwrap();
    for page in ["overview", "queues", "exchanges", "connections", "channels", "users", "vhosts", "rpc"] {
        p.eval(&format!("location.hash = '#/{}'", if page == "overview" { "" } else { page })).await.unwrap();
        let r = p.wait_for(&format!("document.querySelector('#main').dataset.page === '{page}' && document.querySelector('#main h1') && document.querySelector('#main').innerText.slice(0, 300)")).await;
        println!("{page}: {r:?}");
        p.screenshot(std::path::Path::new(&format!("/tmp/dash/{page}.png"))).await.unwrap();
    }
    b.close().await;
}
