//! AMQP over TLS: Warren's AMQPS listener with lapin and pika, with and without client
//! certificates; certificate login (`EXTERNAL`, by common name and by distinguished name);
//! refusals (a certificate from another CA, no certificate where one is required, an unknown
//! server CA); and warren-rpc over `amqps://` on Warren and on the reference RabbitMQ's AMQPS
//! listener (127.0.0.1:5674, CA in /tmp/warren-refnode/tls, started by
//! `../shared/refnode.sh start`; skipped when unreachable, except under CI).
//!
//! Certificate login compared with RabbitMQ: `external_on_warren` and `external_on_rabbitmq` run
//! one scenario (a known user's certificate logs in, an unknown one is refused with 403, no
//! certificate fails the TLS handshake) against Warren and against the node of
//! `scripts/external-node.sh` (which has the rabbitmq_auth_mechanism_ssl plugin), whose URL
//! `WARREN_TEST_EXTERNAL_URL` gives (CI starts it; skipped, saying so, when it is not up).
//!
//! HTTPS: the management API and the Prometheus endpoint over TLS, a plain-HTTP request to the
//! HTTPS port, and a client that does not trust the server's CA.
//!
//! Every certificate is made by the test ([`warren_tests::pki`]; openssl with the CA
//! `scripts/external-node.sh` made, for that node).

use std::path::PathBuf;
use std::process::Command;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use rcgen::DnType;
use warren_broker::{Broker, BrokerHandle, CertLoginFrom, TlsConfig};
use warren_examples::{Calc, CalculatorClient, CalculatorServer};
use warren_tests::pki::{CertPem, Pki};
use warren_tests::{amqp_error, close, round_trip, unique, WAIT};

/// A Warren with an AMQPS listener using `pki`'s server certificate; `tune` sets peer
/// verification. Users: guest (loopback) plus `users` (name, password).
async fn tls_broker(
    pki: &Pki,
    tune: impl FnOnce(TlsConfig) -> TlsConfig,
    users: &[(&str, &str)],
) -> BrokerHandle {
    let tls = tune(
        TlsConfig::new(pki.server.cert.clone(), pki.server.key.clone()).ca(pki.ca_pem.clone()),
    );
    let mut builder = Broker::builder()
        .listen("127.0.0.1:0".parse().expect("address"))
        .tls_listen("127.0.0.1:0".parse().expect("address"), tls);
    for (name, password) in users {
        builder = builder.user(*name, *password);
    }
    builder.start().await.expect("TLS broker starts")
}

/// The TLS URL of `broker` for these credentials and query.
fn amqps(broker: &BrokerHandle, userinfo: &str, query: &str) -> String {
    let port = broker.tls_local_addr().expect("TLS listener").port();
    format!("amqps://{userinfo}@localhost:{port}/%2f{query}")
}

/// lapin over TLS, trusting `ca` (PEM), presenting `client` if given.
async fn lapin_tls(
    url: &str,
    ca: Option<&str>,
    client: Option<&CertPem>,
) -> lapin::Result<Connection> {
    let config = OwnedTLSConfig {
        identity: client.map(|c| OwnedIdentity::PKCS8 {
            pem: c.cert.clone().into_bytes(),
            key: c.key.clone().into_bytes(),
        }),
        cert_chain: ca.map(str::to_owned),
    };
    let runtime = lapin::runtime::default_runtime()?;
    tokio::time::timeout(
        WAIT,
        Connection::connect_with_config(url, ConnectionProperties::default(), config, runtime),
    )
    .await
    .unwrap_or_else(|_| panic!("{url}: connect timed out"))
}

/// Asserts that a connection attempt was refused at login: 403 ACCESS_REFUSED for `mechanism`.
fn assert_login_refused(res: lapin::Result<Connection>, mechanism: &str, what: &str) {
    let err = res
        .err()
        .unwrap_or_else(|| panic!("{what}: login must be refused"));
    let (code, text) =
        amqp_error(&err).unwrap_or_else(|| panic!("{what}: expected 403, got {err}"));
    assert_eq!(
        (code, text.as_str()),
        (403, format!("ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.").as_str()),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_connects_over_tls_with_and_without_a_client_certificate() {
    let pki = Pki::new("warren-test-ca");
    let broker = tls_broker(&pki, |t| t.verify_peer(true), &[]).await;
    let url = amqps(&broker, "guest:guest", "");
    let conn = lapin_tls(&url, Some(&pki.ca_pem), None)
        .await
        .expect("TLS without a client certificate");
    round_trip(&conn, "no client certificate").await;
    close(conn).await;

    let client = pki.client("client", &[(DnType::CommonName, "some-client")]);
    let conn = lapin_tls(&url, Some(&pki.ca_pem), Some(&client))
        .await
        .expect("TLS with a client certificate");
    round_trip(&conn, "client certificate, PLAIN").await;
    close(conn).await;

    // The plain listener keeps working beside it.
    let conn = Connection::connect(&broker.amqp_url(), ConnectionProperties::default())
        .await
        .expect("plain");
    round_trip(&conn, "plain listener").await;
    close(conn).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_logs_in_by_common_name() {
    let pki = Pki::new("warren-test-ca");
    let broker = tls_broker(
        &pki,
        |t| {
            t.verify_peer(true)
                .cert_login_from(CertLoginFrom::CommonName)
        },
        &[("tls-app", "not-used-by-external")],
    )
    .await;
    let url = amqps(&broker, "", "?auth_mechanism=external");
    let app = pki.client(
        "app",
        &[
            (DnType::OrganizationName, "Warren Tests"),
            (DnType::CommonName, "tls-app"),
        ],
    );
    let conn = lapin_tls(&url, Some(&pki.ca_pem), Some(&app))
        .await
        .expect("EXTERNAL as tls-app");
    round_trip(&conn, "EXTERNAL by common name").await;
    close(conn).await;

    let stranger = pki.client("stranger", &[(DnType::CommonName, "nobody-here")]);
    assert_login_refused(
        lapin_tls(&url, Some(&pki.ca_pem), Some(&stranger)).await,
        "EXTERNAL",
        "a certificate naming no user",
    );
    assert_login_refused(
        lapin_tls(&url, Some(&pki.ca_pem), None).await,
        "EXTERNAL",
        "EXTERNAL without a certificate",
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_logs_in_by_distinguished_name_by_default() {
    let pki = Pki::new("warren-test-ca");
    // RabbitMQ's default `ssl_cert_login_from`: the whole subject, most specific part first.
    let broker = tls_broker(
        &pki,
        |t| t.verify_peer(true),
        &[("CN=tls-dn,O=Warren Tests", "x"), ("tls-dn", "x")],
    )
    .await;
    let url = amqps(&broker, "", "?auth_mechanism=external");
    let client = pki.client(
        "dn",
        &[
            (DnType::OrganizationName, "Warren Tests"),
            (DnType::CommonName, "tls-dn"),
        ],
    );
    let conn = lapin_tls(&url, Some(&pki.ca_pem), Some(&client))
        .await
        .expect("EXTERNAL by DN");
    round_trip(&conn, "EXTERNAL by distinguished name").await;
    close(conn).await;
    // Without a user of that exact subject, the common name alone does not log in.
    let cn_only = pki.client(
        "cn",
        &[
            (DnType::OrganizationName, "Elsewhere"),
            (DnType::CommonName, "tls-dn"),
        ],
    );
    assert_login_refused(
        lapin_tls(&url, Some(&pki.ca_pem), Some(&cn_only)).await,
        "EXTERNAL",
        "subject naming no user",
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_is_not_offered_without_peer_verification() {
    let pki = Pki::new("warren-test-ca");
    let broker = tls_broker(&pki, |t| t, &[]).await;
    let client = pki.client("client", &[(DnType::CommonName, "guest")]);
    let url = amqps(&broker, "", "?auth_mechanism=external");
    let res = lapin_tls(&url, Some(&pki.ca_pem), Some(&client)).await;
    assert!(
        res.is_err(),
        "EXTERNAL must not log in when certificates are not verified"
    );
    // PLAIN still works on that listener.
    let conn = lapin_tls(&amqps(&broker, "guest:guest", ""), Some(&pki.ca_pem), None)
        .await
        .expect("PLAIN over TLS");
    round_trip(&conn, "PLAIN, no verification").await;
    close(conn).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_no_certificate_wrong_ca_unknown_server() {
    let pki = Pki::new("warren-test-ca");
    let broker = tls_broker(
        &pki,
        |t| t.verify_peer(true).fail_if_no_peer_cert(true),
        &[],
    )
    .await;
    let url = amqps(&broker, "guest:guest", "");

    let res = lapin_tls(&url, Some(&pki.ca_pem), None).await;
    assert!(
        res.is_err(),
        "fail_if_no_peer_cert: a client without a certificate is refused"
    );

    let other = Pki::new("another-ca");
    let foreign = other.client("foreign", &[(DnType::CommonName, "guest")]);
    let res = lapin_tls(&url, Some(&pki.ca_pem), Some(&foreign)).await;
    assert!(
        res.is_err(),
        "a certificate signed by another CA is refused"
    );

    let client = pki.client("client", &[(DnType::CommonName, "guest")]);
    let res = lapin_tls(&url, None, Some(&client)).await;
    assert!(
        res.is_err(),
        "a client that does not trust the server's CA refuses it"
    );

    let conn = lapin_tls(&url, Some(&pki.ca_pem), Some(&client))
        .await
        .expect("the right certificate");
    round_trip(&conn, "required client certificate").await;
    close(conn).await;
    broker.shutdown().await;
}

/// The reference RabbitMQ's AMQPS listener: (port, CA, client certificate, client key), or
/// `None` (after saying so) when it is not running. Under CI it must be.
fn refnode() -> Option<(u16, PathBuf, PathBuf, PathBuf)> {
    let dir = PathBuf::from(
        std::env::var("WARREN_REFNODE_DIR").unwrap_or_else(|_| "/tmp/warren-refnode".into()),
    )
    .join("tls");
    let up = std::net::TcpStream::connect("127.0.0.1:5674").is_ok() && dir.join("ca.pem").exists();
    if !up {
        assert!(std::env::var_os("CI").is_none(), "CI is set but the reference node's AMQPS (127.0.0.1:5674) is down: ../shared/refnode.sh start");
        println!("skipped the RabbitMQ variant: the reference node's AMQPS on 127.0.0.1:5674 is not running (../shared/refnode.sh start)");
        return None;
    }
    Some((
        5674,
        dir.join("ca.pem"),
        dir.join("client.pem"),
        dir.join("client.key"),
    ))
}

/// Runs `tests/python/tls_pika.py` with these arguments; returns its report on failure.
async fn pika(args: Vec<String>) -> Result<String, String> {
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "python", "tls_pika.py"]
        .iter()
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(script).args(&args).output()
    })
    .await
    .expect("join")
    .map_err(|e| format!("cannot run python3: {e}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

fn pika_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI is set but pika is unavailable (pip install pika)"
    );
    if !ok {
        println!("skipped: python3 cannot import pika");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_over_tls_on_warren() {
    if !pika_available() {
        return;
    }
    let pki = Pki::new("warren-test-ca");
    let broker = tls_broker(
        &pki,
        |t| {
            t.verify_peer(true)
                .cert_login_from(CertLoginFrom::CommonName)
        },
        &[("guest", "guest"), ("pika-app", "x")],
    )
    .await;
    let port = broker.tls_local_addr().expect("TLS").port().to_string();
    pki.client("pika", &[(DnType::CommonName, "pika-app")]);
    pki.client("nobody", &[(DnType::CommonName, "nobody-here")]);
    let path = |f: &str| pki.path(f).display().to_string();
    let base = |mode: &str| {
        vec![
            "localhost".to_string(),
            port.clone(),
            path("ca.pem"),
            mode.to_string(),
        ]
    };
    let with_cert = |mode: &str, who: &str| {
        [
            base(mode),
            vec![path(&format!("{who}.pem")), path(&format!("{who}.key"))],
        ]
        .concat()
    };
    for args in [
        base("plain"),
        with_cert("plain-cert", "pika"),
        with_cert("external", "pika"),
        with_cert("refused-external", "nobody"),
    ] {
        let report = pika(args.clone())
            .await
            .unwrap_or_else(|r| panic!("pika {args:?}:\n{r}"));
        println!("{report}");
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_over_tls_on_rabbitmq() {
    if !pika_available() {
        return;
    }
    let Some((port, ca, cert, key)) = refnode() else {
        return;
    };
    let show = |p: &PathBuf| p.display().to_string();
    let base = |mode: &str| {
        vec![
            "localhost".to_string(),
            port.to_string(),
            show(&ca),
            mode.to_string(),
        ]
    };
    for args in [
        base("plain"),
        [base("plain-cert"), vec![show(&cert), show(&key)]].concat(),
    ] {
        let report = pika(args.clone())
            .await
            .unwrap_or_else(|r| panic!("pika on RabbitMQ {args:?}:\n{r}"));
        println!("{report}");
    }
}

/// The calculator served and called over `amqps://` with these TLS settings.
async fn calculator_over(url: &str, tls: warren_rpc::Tls, what: &str) {
    let queue = unique("calculator-tls");
    let server = warren_rpc::Server::builder()
        .queue_name(queue.clone())
        .tls(tls.clone())
        .serve(url, CalculatorServer::new(Calc::new()))
        .await
        .unwrap_or_else(|e| panic!("{what}: server over amqps: {e}"));
    let client = warren_rpc::Client::builder()
        .tls(tls)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{what}: client over amqps: {e}"));
    let calc = CalculatorClient::new(client.clone())
        .with_options(warren_rpc::CallOptions::new().service(queue.as_str()));
    assert_eq!(
        calc.add(2, 3)
            .await
            .unwrap_or_else(|e| panic!("{what}: add: {e}")),
        5,
        "{what}"
    );
    assert_eq!(
        calc.mul(6, 7)
            .await
            .unwrap_or_else(|e| panic!("{what}: mul: {e}")),
        42,
        "{what}"
    );
    client.close().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculator_over_amqps_on_warren() {
    let pki = Pki::new("warren-test-ca");
    let broker = tls_broker(
        &pki,
        |t| {
            t.verify_peer(true)
                .cert_login_from(CertLoginFrom::CommonName)
        },
        &[("guest", "guest"), ("calc-app", "x")],
    )
    .await;
    let ca_only = warren_rpc::Tls::new()
        .ca_file(pki.path("ca.pem"))
        .expect("CA file");
    calculator_over(&amqps(&broker, "guest:guest", ""), ca_only, "warren, PLAIN").await;

    pki.client("calc", &[(DnType::CommonName, "calc-app")]);
    let with_cert = warren_rpc::Tls::new()
        .ca_file(pki.path("ca.pem"))
        .and_then(|t| t.client_cert_files(pki.path("calc.pem"), pki.path("calc.key")))
        .expect("certificate files");
    calculator_over(
        &amqps(&broker, "", "?auth_mechanism=external"),
        with_cert,
        "warren, EXTERNAL",
    )
    .await;
    broker.shutdown().await;
}

/// A client certificate (X.509 v3, CN=`cn`) signed by the CA in `ca_dir` (`ca.pem`, `ca.key`: a
/// RabbitMQ node's), made with openssl in `dir`: rustls, under lapin, refuses the reference
/// node's own `client.pem`, which openssl made as a version 1 certificate
/// (`UnsupportedCertVersion`).
fn v3_client_cert(ca_dir: &std::path::Path, dir: &std::path::Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key, csr, ext) = (
        dir.join("client.pem"),
        dir.join("client.key"),
        dir.join("client.csr"),
        dir.join("ext"),
    );
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .expect("ext file");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[
        &os("req"),
        &os("-newkey"),
        &os("rsa:2048"),
        &os("-nodes"),
        &os("-subj"),
        &os(&format!("/CN={cn}")),
        &os("-keyout"),
        key.as_os_str(),
        &os("-out"),
        csr.as_os_str(),
    ]);
    run(&[
        &os("x509"),
        &os("-req"),
        &os("-in"),
        csr.as_os_str(),
        &os("-CA"),
        ca_dir.join("ca.pem").as_os_str(),
        &os("-CAkey"),
        ca_dir.join("ca.key").as_os_str(),
        &os("-CAcreateserial"),
        &os("-CAserial"),
        dir.join("ca.srl").as_os_str(),
        &os("-days"),
        &os("1"),
        &os("-extfile"),
        ext.as_os_str(),
        &os("-out"),
        cert.as_os_str(),
    ]);
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calculator_over_amqps_on_rabbitmq() {
    let Some((port, ca, _, _)) = refnode() else {
        return;
    };
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let ca_only = warren_rpc::Tls::new().ca_file(&ca).expect("CA file");
    calculator_over(&url, ca_only, "rabbitmq, PLAIN").await;
    let dir = std::env::temp_dir().join(unique("warren-refnode-client"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = v3_client_cert(ca.parent().expect("tls dir"), &dir, "warren-rpc-client");
    let with_cert = warren_rpc::Tls::new()
        .ca_file(&ca)
        .and_then(|t| t.client_cert_files(&cert, &key))
        .expect("certificate files");
    calculator_over(&url, with_cert, "rabbitmq, client certificate, PLAIN").await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The user `scripts/external-node.sh` creates without a password (and the Warren variant
/// imports the same way): only a certificate naming it logs it in.
const EXTERNAL_USER: &str = "warren-external";

/// The same definitions the script loads into its node: the user, no password, all of "/".
fn external_definitions() -> String {
    serde_json::json!({
        "vhosts": [{"name": "/"}],
        "users": [{"name": EXTERNAL_USER, "password_hash": "",
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}],
        "permissions": [{"user": EXTERNAL_USER, "vhost": "/",
                         "configure": ".*", "write": ".*", "read": ".*"}],
    })
    .to_string()
}

/// A broker the EXTERNAL scenario runs against: its AMQPS port on localhost (peers verified,
/// a certificate required, the login name taken from the common name), the CA (PEM) that
/// signed its certificate, and a maker of client certificates with a given common name that it
/// trusts.
struct ExternalTarget<'a> {
    name: &'static str,
    port: u16,
    ca_pem: String,
    client: Box<dyn Fn(&str) -> CertPem + 'a>,
}

/// The scenario, with the same assertions on either broker.
async fn external_scenario(t: &ExternalTarget<'_>) {
    let name = t.name;
    let url = format!("amqps://localhost:{}/%2f?auth_mechanism=external", t.port);
    // A certificate naming an existing user (who has no password) logs in.
    let known = (t.client)(EXTERNAL_USER);
    let conn = lapin_tls(&url, Some(&t.ca_pem), Some(&known))
        .await
        .unwrap_or_else(|e| panic!("{name}: EXTERNAL as {EXTERNAL_USER}: {e}"));
    round_trip(&conn, &format!("{name}: EXTERNAL")).await;
    close(conn).await;
    // A certificate naming no user: refused at login, 403 ACCESS_REFUSED.
    let stranger = (t.client)("warren-external-unknown");
    assert_login_refused(
        lapin_tls(&url, Some(&t.ca_pem), Some(&stranger)).await,
        "EXTERNAL",
        &format!("{name}: a certificate naming no user"),
    );
    // No certificate: fail_if_no_peer_cert refuses the TLS handshake, before any AMQP.
    let err = lapin_tls(&url, Some(&t.ca_pem), None)
        .await
        .err()
        .unwrap_or_else(|| panic!("{name}: no client certificate must be refused"));
    assert!(
        amqp_error(&err).is_none(),
        "{name}: without a certificate the TLS handshake fails, not the AMQP login: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_on_warren() {
    let pki = Pki::new("warren-test-ca");
    let broker = tls_broker(
        &pki,
        |t| {
            t.verify_peer(true)
                .fail_if_no_peer_cert(true)
                .cert_login_from(CertLoginFrom::CommonName)
        },
        &[],
    )
    .await;
    broker
        .import_definitions(&external_definitions())
        .expect("definitions import");
    let target = ExternalTarget {
        name: "warren",
        port: broker.tls_local_addr().expect("TLS listener").port(),
        ca_pem: pki.ca_pem.clone(),
        client: Box::new(|cn| pki.client(&format!("client-{cn}"), &[(DnType::CommonName, cn)])),
    };
    external_scenario(&target).await;
    broker.shutdown().await;
}

/// The AMQPS port and CA file of `scripts/external-node.sh`'s node, from
/// `WARREN_TEST_EXTERNAL_URL` (`amqps://localhost:PORT/%2f?cacertfile=FILE`), or `None` (after
/// saying why) when it is not set or the node does not answer.
fn external_node() -> Option<(u16, PathBuf)> {
    let Ok(url) = std::env::var("WARREN_TEST_EXTERNAL_URL") else {
        println!("skipped the RabbitMQ variant: WARREN_TEST_EXTERNAL_URL is not set (scripts/external-node.sh start prints it)");
        return None;
    };
    let rest = url
        .strip_prefix("amqps://localhost:")
        .expect("amqps://localhost:PORT/...");
    let (port, rest) = rest.split_once('/').expect("a path after the port");
    let port: u16 = port.parse().expect("port");
    let ca = rest
        .split_once("cacertfile=")
        .map(|(_, f)| PathBuf::from(f.split('&').next().unwrap_or(f)))
        .expect("cacertfile= in WARREN_TEST_EXTERNAL_URL");
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !ca.exists() {
        println!("skipped the RabbitMQ variant: the node of scripts/external-node.sh does not answer on {port} (or {} is missing)", ca.display());
        return None;
    }
    Some((port, ca))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_on_rabbitmq() {
    let Some((port, ca)) = external_node() else {
        return;
    };
    let ca_dir = ca.parent().expect("tls dir").to_path_buf();
    let dir = std::env::temp_dir().join(unique("warren-extnode-client"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let target = ExternalTarget {
        name: "rabbitmq",
        port,
        ca_pem: std::fs::read_to_string(&ca).expect("CA"),
        client: Box::new(|cn| {
            let own = dir.join(cn);
            std::fs::create_dir_all(&own).expect("client dir");
            let (cert, key) = v3_client_cert(&ca_dir, &own, cn);
            CertPem {
                cert: std::fs::read_to_string(cert).expect("client certificate"),
                key: std::fs::read_to_string(key).expect("client key"),
            }
        }),
    };
    external_scenario(&target).await;
    drop(target);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP client trusting only `ca_pem`.
fn https_agent(ca_pem: &str) -> ureq::Agent {
    use ureq::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(std::sync::Arc::new(config))
        .timeout(WAIT)
        .build()
}

/// What a plain-HTTP request to `addr` gets back before the server closes the connection
/// (the bytes, at most 64 KiB), within a deadline.
fn plain_http_reply(addr: std::net::SocketAddr) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + 2 * WAIT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the HTTPS port neither answered nor closed a plain-HTTP request"
        );
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if got.len() < 65536 => got.extend_from_slice(&buf[..n]),
            Ok(_) => break,
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_and_prometheus_over_https() {
    let pki = Pki::new("warren-test-ca");
    let tls = || TlsConfig::new(pki.server.cert.clone(), pki.server.key.clone());
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("address");
    let broker = Broker::builder()
        .listen(any)
        .management(any)
        .management_tls(tls())
        .prometheus(any)
        .prometheus_tls(tls())
        .start()
        .await
        .expect("broker with HTTPS listeners");
    let mgmt = broker.management_addr().expect("management").port();
    let prom = broker.prometheus_addr().expect("prometheus").port();
    let overview_url = format!("https://localhost:{mgmt}/api/overview");
    let metrics_url = format!("https://localhost:{prom}/metrics");
    let agent = https_agent(&pki.ca_pem);
    // GET as guest: the status and body (panics when there is no HTTP answer).
    let get = |url: String| {
        let agent = agent.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let resp = agent
                    .get(&url)
                    .set("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
                    .call()
                    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
                (resp.status(), resp.into_string().expect("body"))
            })
            .await
            .expect("join")
        }
    };
    let (status, body) = get(overview_url.clone()).await;
    assert_eq!(status, 200, "{body}");
    let overview: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let protocols: Vec<&str> = overview["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .filter_map(|l| l["protocol"].as_str())
        .collect();
    assert!(
        protocols.contains(&"https") && protocols.contains(&"https/prometheus"),
        "RabbitMQ's names for TLS listeners: {protocols:?}"
    );
    let (status, metrics) = get(metrics_url.clone()).await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("rabbitmq_"), "{metrics}");

    // Plain HTTP on the HTTPS ports: no HTTP answer, the connection closes, and HTTPS goes on.
    for port in [mgmt, prom] {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let reply = tokio::task::spawn_blocking(move || plain_http_reply(addr))
            .await
            .expect("join");
        assert!(
            !reply.starts_with(b"HTTP/"),
            "port {port} answered plain HTTP: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    // A client that does not trust the server's CA gives up.
    let other = Pki::new("another-ca");
    let stranger = https_agent(&other.ca_pem);
    let url = overview_url.clone();
    let refused = tokio::task::spawn_blocking(move || match stranger.get(&url).call() {
        Err(ureq::Error::Transport(t)) => Ok(t.to_string()),
        Err(e) => Err(format!("an HTTP answer: {e}")),
        Ok(r) => Err(format!("an HTTP answer: {}", r.status())),
    })
    .await
    .expect("join");
    assert!(
        refused.is_ok(),
        "a client not trusting the CA must fail the handshake: {refused:?}"
    );
    for url in [overview_url, metrics_url] {
        let (status, body) = get(url.clone()).await;
        assert_eq!(status, 200, "{url} after the refusals: {body}");
    }
    broker.shutdown().await;
}
