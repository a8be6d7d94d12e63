//! Users, vhosts, permissions and limits, compared with the reference RabbitMQ node
//! (`../shared/refnode.sh`: AMQP 5673, management API 15673): the same cases, the same
//! assertions on outcomes, reply codes and texts. On RabbitMQ users, vhosts, permissions and
//! limits are made through its management API; on Warren through RabbitMQ definitions JSON
//! imported into a broker of the test's own (`BrokerHandle::import_definitions`).
//!
//! Each case becomes two tests, `NAME::bundled` and `NAME::rabbitmq`; the RabbitMQ one says it
//! was skipped when the reference node is unreachable.

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::future::Future;
use warren_tests::{amqp_error, bundled, close, refnode, unique, Target, WAIT};

/// A broker and how to administer it.
struct Side {
    t: Target,
    /// The management API's base URL (RabbitMQ only).
    mgmt: Option<String>,
    /// Users and vhosts made here, deleted at the end on RabbitMQ.
    made: std::sync::Mutex<(Vec<String>, Vec<String>)>,
}

/// Defines a case run once on Warren and once on the reference RabbitMQ node.
macro_rules! access_test {
    ($(async fn $name:ident($side:ident: Side) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn case($side: &Side) $body

            #[tokio::test]
            async fn bundled() {
                let side = Side::bundled().await;
                case(&side).await;
            }

            #[tokio::test]
            async fn rabbitmq() {
                match Side::refnode() {
                    Ok(side) => {
                        case(&side).await;
                        side.cleanup();
                    }
                    Err(why) => println!("skipped rabbitmq variant: {why}"),
                }
            }
        }
    )*};
}

const BASIC_GUEST: &str = "Basic Z3Vlc3Q6Z3Vlc3Q="; // guest:guest

fn enc(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

impl Side {
    async fn bundled() -> Side {
        Side {
            t: bundled().await,
            mgmt: None,
            made: Default::default(),
        }
    }

    fn refnode() -> Result<Side, String> {
        let t = refnode()?;
        let mgmt = std::env::var("WARREN_TEST_REFNODE_MGMT_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:15673".to_owned());
        Ok(Side {
            t,
            mgmt: Some(mgmt),
            made: Default::default(),
        })
    }

    /// Applies definitions JSON on Warren, or calls the management API on RabbitMQ.
    fn admin(&self, defs: Value, method: &str, path: &str, body: Value) {
        match &self.mgmt {
            None => {
                let broker = self.t.own_broker().expect("own bundled broker");
                broker
                    .import_definitions(&defs.to_string())
                    .unwrap_or_else(|e| panic!("bundled: import {defs}: {e}"));
            }
            Some(base) => {
                let url = format!("{base}{path}");
                let req = ureq::request(method, &url).set("Authorization", BASIC_GUEST);
                let res = if method == "DELETE" {
                    req.call()
                } else {
                    req.send_json(body)
                };
                if let Err(e) = res {
                    panic!("rabbitmq: {method} {url}: {e}");
                }
            }
        }
    }

    fn user(&self, name: &str, password: &str) {
        self.tagged_user(name, password, "");
    }

    /// A user with tags (comma-separated, as the management API takes them).
    fn tagged_user(&self, name: &str, password: &str, tags: &str) {
        let list: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
        self.admin(
            json!({"users": [{"name": name, "password": password, "tags": list}]}),
            "PUT",
            &format!("/api/users/{}", enc(name)),
            json!({"password": password, "tags": tags}),
        );
        self.made.lock().unwrap().0.push(name.to_owned());
    }

    fn vhost(&self, name: &str) {
        self.admin(
            json!({"vhosts": [{"name": name}]}),
            "PUT",
            &format!("/api/vhosts/{}", enc(name)),
            json!({}),
        );
        self.made.lock().unwrap().1.push(name.to_owned());
    }

    fn permit(&self, user: &str, vhost: &str, configure: &str, write: &str, read: &str) {
        let p = json!({"configure": configure, "write": write, "read": read});
        let mut entry = p.clone();
        entry["user"] = json!(user);
        entry["vhost"] = json!(vhost);
        self.admin(
            json!({"permissions": [entry]}),
            "PUT",
            &format!("/api/permissions/{}/{}", enc(vhost), enc(user)),
            p,
        );
    }

    fn topic_permit(&self, user: &str, vhost: &str, exchange: &str, write: &str, read: &str) {
        let p = json!({"exchange": exchange, "write": write, "read": read});
        let mut entry = p.clone();
        entry["user"] = json!(user);
        entry["vhost"] = json!(vhost);
        self.admin(
            json!({"topic_permissions": [entry]}),
            "PUT",
            &format!("/api/topic-permissions/{}/{}", enc(vhost), enc(user)),
            p,
        );
    }

    fn vhost_limit(&self, vhost: &str, what: &str, n: i64) {
        self.admin(
            json!({"parameters": [{"vhost": vhost, "component": "vhost-limits",
                                   "name": "limits", "value": {what: n}}]}),
            "PUT",
            &format!("/api/vhost-limits/{}/{what}", enc(vhost)),
            json!({"value": n}),
        );
    }

    /// Sets a user limit (Warren's definitions carry limits on the user, with its password).
    fn user_limit(&self, user: &str, password: &str, what: &str, n: i64) {
        self.admin(
            json!({"users": [{"name": user, "password": password, "tags": [],
                              "limits": {what: n}}]}),
            "PUT",
            &format!("/api/user-limits/{}/{what}", enc(user)),
            json!({"value": n}),
        );
    }

    async fn delete_vhost(&self, vhost: &str) {
        match &self.mgmt {
            None => {
                let broker = self.t.own_broker().expect("own bundled broker");
                assert!(broker.delete_vhost(vhost).await, "bundled: delete vhost");
            }
            Some(_) => self.admin(
                json!({}),
                "DELETE",
                &format!("/api/vhosts/{}", enc(vhost)),
                json!({}),
            ),
        }
    }

    /// Deletes the users and vhosts this side made on RabbitMQ.
    fn cleanup(&self) {
        let Some(base) = &self.mgmt else { return };
        let (users, vhosts) = std::mem::take(&mut *self.made.lock().unwrap());
        for (kind, name) in users
            .iter()
            .map(|u| ("users", u))
            .chain(vhosts.iter().map(|v| ("vhosts", v)))
        {
            let url = format!("{base}/api/{kind}/{}", enc(name));
            let _ = ureq::delete(&url).set("Authorization", BASIC_GUEST).call();
        }
    }

    async fn connect(&self, user: &str, password: &str, vhost: &str) -> lapin::Result<Connection> {
        let url = self.t.url_with(user, password, vhost);
        tokio::time::timeout(
            WAIT,
            Connection::connect(&url, ConnectionProperties::default()),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: connect as {user} timed out", self.t))
    }

    async fn open(&self, user: &str, password: &str, vhost: &str) -> Connection {
        self.connect(user, password, vhost)
            .await
            .unwrap_or_else(|e| panic!("{}: connect as {user} to {vhost}: {e}", self.t))
    }
}

/// Asserts an outcome: `None` allowed, `Some(text)` refused with 403 and exactly that text.
fn expect<T: std::fmt::Debug>(
    t: &Target,
    what: &str,
    res: lapin::Result<T>,
    refused: Option<&str>,
) {
    match (res, refused) {
        (Ok(_), None) => {}
        (Ok(v), Some(text)) => panic!("{t}: {what}: expected 403 {text:?}, got success {v:?}"),
        (Err(e), None) => panic!("{t}: {what}: expected success, got {e}"),
        (Err(e), Some(text)) => assert_eq!(
            amqp_error(&e),
            Some((403, format!("ACCESS_REFUSED - {text}"))),
            "{t}: {what}"
        ),
    }
}

/// Runs one operation on a fresh channel of `conn` and checks its outcome.
async fn check_op<F, Fut, T>(
    t: &Target,
    conn: &Connection,
    what: &str,
    refused: Option<&str>,
    op: F,
) where
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = lapin::Result<T>>,
    T: std::fmt::Debug,
{
    let ch = conn
        .create_channel()
        .await
        .unwrap_or_else(|e| panic!("{t}: {what}: channel: {e}"));
    expect(t, what, op(ch).await, refused);
}

/// A consumer on a fresh exclusive server-named queue of `ch`: it hears the channel.close,
/// whatever races it.
async fn close_watch(ch: &Channel) -> lapin::Result<lapin::Consumer> {
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let q = ch
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await?;
    ch.basic_consume(
        q.name().as_str().into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// Publishes on a fresh confirm-mode channel: Ok once confirmed, or the channel's close reason.
async fn publish(conn: &Connection, exchange: &str, key: &str) -> lapin::Result<()> {
    publish_with(conn, exchange, key, BasicProperties::default()).await
}

/// [`publish`] with the given properties.
async fn publish_with(
    conn: &Connection,
    exchange: &str,
    key: &str,
    props: BasicProperties,
) -> lapin::Result<()> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    // A consumer on a queue the user may read hears the channel.close, whatever races it.
    let mut watch = close_watch(&ch).await?;
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            b"m",
            props,
        )
        .await?;
    tokio::select! {
        c = confirm => match c? {
            Confirmation::Ack(_) => Ok(()),
            other => panic!("publish to {exchange:?}: {other:?}"),
        },
        Some(Err(e)) = watch.next() => Err(e),
    }
}

fn declare_opts() -> QueueDeclareOptions {
    QueueDeclareOptions::default()
}

access_test! {
    async fn permission_matrix(side: Side) {
        let t = &side.t;
        let v = unique("vh");
        let (u, d, n, tp) = (unique("u"), unique("d"), unique("n"), unique("t"));
        side.vhost(&v);
        side.permit("guest", &v, ".*", ".*", ".*");
        for user in [&u, &d, &n, &tp] {
            side.user(user, "pw");
        }
        side.permit(&u, &v, "^(c-|amq\\.gen-)", "^w-", "^(r-|amq\\.gen-)");
        side.permit(&d, &v, "^amq\\.gen-", "^amq\\.default$", "^amq\\.gen-");
        side.permit(&n, &v, "", "", "");
        side.permit(&tp, &v, "^amq\\.gen-", ".*", ".*");
        side.topic_permit(&tp, &v, "amq.topic", "^allowed\\.", "^bindable\\.");

        // The resources, made by guest.
        let admin = side.open("guest", "guest", &v).await;
        let ch = admin.create_channel().await.expect("admin channel");
        for q in ["c-q", "r-q", "w-q", "x-q"] {
            ch.queue_declare(q.into(), declare_opts(), FieldTable::default()).await.expect("admin queue");
        }
        for x in ["w-x", "r-x", "x-x", "c-x"] {
            ch.exchange_declare(x.into(), lapin::ExchangeKind::Direct, ExchangeDeclareOptions::default(), FieldTable::default())
                .await
                .expect("admin exchange");
        }
        for _ in 0..3 {
            ch.basic_publish("".into(), "r-q".into(), BasicPublishOptions::default(), b"m", BasicProperties::default())
                .await
                .expect("admin publish");
        }
        ch.queue_bind("w-q".into(), "r-x".into(), "k".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .expect("admin bind");

        let refused = |kind: &str, name: &str, user: &str| {
            format!("access to {kind} '{name}' in vhost '{v}' refused for user '{user}'")
        };
        let uc = side.open(&u, "pw", &v).await;
        // declare: configure
        check_op(t, &uc, "declare permitted queue", None, |c| async move {
            c.queue_declare("c-new".into(), declare_opts(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "declare queue", Some(&refused("queue", "x-new", &u)), |c| async move {
            c.queue_declare("x-new".into(), declare_opts(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "passive declare needs no permission", None, |c| async move {
            c.queue_declare("x-q".into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await
        }).await;
        check_op(t, &uc, "declare exchange", None, |c| async move {
            c.exchange_declare("c-newx".into(), lapin::ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "declare exchange", Some(&refused("exchange", "x-newx", &u)), |c| async move {
            c.exchange_declare("x-newx".into(), lapin::ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default()).await
        }).await;
        // delete: configure
        check_op(t, &uc, "delete queue", None, |c| async move {
            c.queue_delete("c-q".into(), QueueDeleteOptions::default()).await
        }).await;
        check_op(t, &uc, "delete queue", Some(&refused("queue", "r-q", &u)), |c| async move {
            c.queue_delete("r-q".into(), QueueDeleteOptions::default()).await
        }).await;
        check_op(t, &uc, "delete exchange", None, |c| async move {
            c.exchange_delete("c-x".into(), ExchangeDeleteOptions::default()).await
        }).await;
        check_op(t, &uc, "delete exchange", Some(&refused("exchange", "w-x", &u)), |c| async move {
            c.exchange_delete("w-x".into(), ExchangeDeleteOptions::default()).await
        }).await;
        // bind / unbind: write on the destination, read on the source
        check_op(t, &uc, "bind", None, |c| async move {
            c.queue_bind("w-q".into(), "r-x".into(), "k2".into(), QueueBindOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "bind unwritable queue", Some(&refused("queue", "r-q", &u)), |c| async move {
            c.queue_bind("r-q".into(), "r-x".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "bind from unreadable exchange", Some(&refused("exchange", "w-x", &u)), |c| async move {
            c.queue_bind("w-q".into(), "w-x".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "unbind", None, |c| async move {
            c.queue_unbind("w-q".into(), "r-x".into(), "k".into(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "unbind unwritable queue", Some(&refused("queue", "r-q", &u)), |c| async move {
            c.queue_unbind("r-q".into(), "r-x".into(), "k".into(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "exchange bind", None, |c| async move {
            c.exchange_bind("w-x".into(), "r-x".into(), "k".into(), ExchangeBindOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "exchange bind to unwritable", Some(&refused("exchange", "r-x", &u)), |c| async move {
            c.exchange_bind("r-x".into(), "r-x".into(), "k".into(), ExchangeBindOptions::default(), FieldTable::default()).await
        }).await;
        // consume, get, purge: read
        check_op(t, &uc, "get", None, |c| async move {
            c.basic_get("r-q".into(), BasicGetOptions { no_ack: true }).await
        }).await;
        check_op(t, &uc, "get", Some(&refused("queue", "w-q", &u)), |c| async move {
            c.basic_get("w-q".into(), BasicGetOptions { no_ack: true }).await
        }).await;
        check_op(t, &uc, "consume", None, |c| async move {
            c.basic_consume("r-q".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "consume", Some(&refused("queue", "w-q", &u)), |c| async move {
            c.basic_consume("w-q".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &uc, "purge", None, |c| async move {
            c.queue_purge("r-q".into(), QueuePurgeOptions::default()).await
        }).await;
        check_op(t, &uc, "purge", Some(&refused("queue", "w-q", &u)), |c| async move {
            c.queue_purge("w-q".into(), QueuePurgeOptions::default()).await
        }).await;
        // publish: write on the exchange; the default exchange is amq.default
        expect(t, "publish", publish(&uc, "w-x", "k").await, None);
        expect(t, "publish", publish(&uc, "r-x", "k").await, Some(&refused("exchange", "r-x", &u)));
        expect(t, "publish to the default exchange", publish(&uc, "", "w-q").await,
               Some(&refused("exchange", "amq.default", &u)));
        let dc = side.open(&d, "pw", &v).await;
        expect(t, "publish to the default exchange", publish(&dc, "", "w-q").await, None);
        // server-named queues are checked on their amq.gen- name
        let nc = side.open(&n, "pw", &v).await;
        let ch = nc.create_channel().await.expect("channel");
        let res = ch.queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await;
        match res.as_ref().map_err(amqp_error) {
            Err(Some((403, text))) => assert!(
                text.starts_with("ACCESS_REFUSED - access to queue 'amq.gen-")
                    && text.ends_with(&format!("' in vhost '{v}' refused for user '{n}'")),
                "{t}: server-named queue: {text}"
            ),
            other => panic!("{t}: server-named queue without configure: {other:?}"),
        }
        // topic permissions: the routing key on publish (write) and bind (read)
        let tc = side.open(&tp, "pw", &v).await;
        expect(t, "topic publish", publish(&tc, "amq.topic", "allowed.a").await, None);
        expect(t, "topic publish", publish(&tc, "amq.topic", "denied.a").await, Some(&format!(
            "access to topic 'denied.a' in exchange 'amq.topic' in vhost '{v}' refused for user '{tp}'"
        )));
        expect(t, "publish to another topic exchange", publish(&tc, "amq.direct", "denied.a").await, None);
        check_op(t, &tc, "topic bind", None, |c| async move {
            c.queue_bind("w-q".into(), "amq.topic".into(), "bindable.#".into(), QueueBindOptions::default(), FieldTable::default()).await
        }).await;
        check_op(t, &tc, "topic bind", Some(&format!(
            "access to topic 'other.#' in exchange 'amq.topic' in vhost '{v}' refused for user '{tp}'"
        )), |c| async move {
            c.queue_bind("w-q".into(), "amq.topic".into(), "other.#".into(), QueueBindOptions::default(), FieldTable::default()).await
        }).await;
        for c in [uc, dc, nc, tc, admin] {
            close(c).await;
        }
    }

    async fn logins_refused(side: Side) {
        let t = &side.t;
        let u = unique("u");
        side.user(&u, "right");
        side.permit(&u, "/", ".*", ".*", ".*");
        for (user, password) in [(u.as_str(), "wrong"), ("warren-test.nobody", "pw")] {
            let mut raw = t.raw().await;
            let caps = warren_tests::table(vec![(
                "capabilities",
                lapin::types::AMQPValue::FieldTable(warren_tests::table(vec![(
                    "authentication_failure_close",
                    lapin::types::AMQPValue::Boolean(true),
                )])),
            )]);
            raw.handshake_until_open(user, password, caps).await;
            let close = raw.expect_connection_close().await;
            assert_eq!(
                (close.code, close.text.as_str()),
                (403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."),
                "{t}: login as {user} with a bad password"
            );
        }
        close(side.open(&u, "right", "/").await).await;
    }

    async fn vhost_without_permissions_is_not_allowed(side: Side) {
        let t = &side.t;
        let (u, v) = (unique("u"), unique("vh"));
        side.user(&u, "pw");
        side.vhost(&v);
        let err = side.connect(&u, "pw", &v).await.expect_err("no permissions");
        assert_eq!(
            amqp_error(&err),
            Some((530, format!("NOT_ALLOWED - access to vhost '{v}' refused for user '{u}'"))),
            "{t}: connection.open without permissions"
        );
        side.permit(&u, &v, "", "", "");
        close(side.open(&u, "pw", &v).await).await;
    }

    async fn deleting_a_vhost_closes_its_connections(side: Side) {
        let t = &side.t;
        let (u, v) = setup_user_and_vhost(side);
        side.permit("guest", &v, ".*", ".*", ".*");
        // A raw client sees the connection.close itself (lapin reports RabbitMQ's close, which
        // is followed by the socket closing at once, as a reset).
        let stream = tokio::net::TcpStream::connect(t.addr()).await.expect("tcp");
        let mut raw = warren_tests::RawConn::new(t.name(), v.clone(), stream);
        raw.handshake().await;
        raw.open_channel(1).await;
        raw.declare_queue(1, "q", false).await;
        raw.consume(1, "q", "c", false).await;
        side.delete_vhost(&v).await;
        let close = raw.expect_connection_close_only().await;
        // RabbitMQ 3.10 sends "is down" when the vhost's supervisor stops first and "is
        // deleted" when the deletion reaches the connection first (a race inside RabbitMQ);
        // Warren sends "is down".
        let down = format!("CONNECTION_FORCED - vhost '{v}' is down");
        let deleted = format!("CONNECTION_FORCED - vhost '{v}' is deleted");
        assert!(
            close.code == 320 && (close.text == down || close.text == deleted),
            "{t}: connection of a deleted vhost: {} {}",
            close.code,
            close.text
        );
        let err = side.connect(&u, "pw", &v).await.expect_err("vhost gone");
        assert_eq!(amqp_error(&err), Some((530, format!("NOT_ALLOWED - vhost {v} not found"))), "{t}");
    }

    async fn vhost_connection_limit(side: Side) {
        let t = &side.t;
        let (u, v) = setup_user_and_vhost(side);
        side.vhost_limit(&v, "max-connections", 1);
        let first = side.open(&u, "pw", &v).await;
        let err = refused_eventually(t, || side.connect(&u, "pw", &v)).await;
        assert_eq!(amqp_error(&err), Some((530, format!(
            "NOT_ALLOWED - access to vhost '{v}' refused for user '{u}': connection limit (1) is reached"
        ))), "{t}: vhost connection limit");
        close(first).await;
        side.vhost_limit(&v, "max-connections", 0);
        let err = side.connect(&u, "pw", &v).await.expect_err("limit 0");
        assert_eq!(amqp_error(&err), Some((530, format!(
            "NOT_ALLOWED - access to vhost '{v}' refused for user '{u}': connection limit (0) is reached"
        ))), "{t}: vhost connection limit 0");
    }

    async fn vhost_queue_limit(side: Side) {
        let t = &side.t;
        let (u, v) = setup_user_and_vhost(side);
        side.vhost_limit(&v, "max-queues", 1);
        let conn = side.open(&u, "pw", &v).await;
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare("q1".into(), declare_opts(), FieldTable::default()).await.expect("first queue");
        ch.queue_declare("q1".into(), declare_opts(), FieldTable::default()).await.expect("redeclare");
        let res = ch.queue_declare("q2".into(), declare_opts(), FieldTable::default()).await;
        assert_eq!(res.as_ref().err().and_then(amqp_error), Some((406, format!(
            "PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '{v}' (1) is reached"
        ))), "{t}: queue limit");
        close(conn).await;
        side.delete_vhost(&v).await;
    }

    async fn user_connection_limit(side: Side) {
        let t = &side.t;
        let (u, v) = setup_user_and_vhost(side);
        side.user_limit(&u, "pw", "max-connections", 1);
        let first = side.open(&u, "pw", &v).await;
        let err = refused_eventually(t, || side.connect(&u, "pw", &v)).await;
        assert_eq!(amqp_error(&err), Some((530, format!(
            "NOT_ALLOWED - connection refused for user '{u}': user connection limit (1) is reached"
        ))), "{t}: user connection limit");
        close(first).await;
    }

    async fn user_channel_limit(side: Side) {
        let t = &side.t;
        let (u, v) = setup_user_and_vhost(side);
        side.user_limit(&u, "pw", "max-channels", 1);
        let conn = side.open(&u, "pw", &v).await;
        let _one = conn.create_channel().await.expect("first channel");
        let err = refused_eventually(t, || async {
            // Each try on a connection of its own: a refused channel closes the connection.
            let c = side.open(&u, "pw", &v).await;
            let res = c.create_channel().await.map(|_| c);
            res
        })
        .await;
        assert_eq!(amqp_error(&err), Some((530, format!(
            "NOT_ALLOWED - number of channels opened for user '{u}' has reached the maximum allowed user limit of (1)"
        ))), "{t}: user channel limit");
        close(conn).await;
    }

    async fn only_an_impersonator_sets_another_user_id(side: Side) {
        let t = &side.t;
        let v = unique("vh");
        side.vhost(&v);
        let (plain, imp) = (unique("u"), unique("imp"));
        side.user(&plain, "pw");
        side.tagged_user(&imp, "pw", "impersonator");
        for u in [&plain, &imp] {
            side.permit(u, &v, ".*", ".*", ".*");
        }
        let forged = || BasicProperties::default().with_user_id("someone-else".into());
        let conn = side.open(&plain, "pw", &v).await;
        let err = publish_with(&conn, "", "nowhere", forged()).await.expect_err("a plain user may not forge user-id");
        close(conn).await;
        assert_eq!(amqp_error(&err), Some((406, format!(
            "PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated user was '{plain}'"
        ))), "{t}: plain user");
        let conn = side.open(&imp, "pw", &v).await;
        publish_with(&conn, "", "nowhere", forged()).await.expect("an impersonator may set any user-id");
        close(conn).await;
        side.delete_vhost(&v).await;
    }
}

/// A user with full permissions on a vhost of its own (password "pw").
fn setup_user_and_vhost(side: &Side) -> (String, String) {
    let (u, v) = (unique("u"), unique("vh"));
    side.user(&u, "pw");
    side.vhost(&v);
    side.permit(&u, &v, ".*", ".*", ".*");
    (u, v)
}

/// Retries `attempt` until it is refused and returns the refusal. RabbitMQ counts connections
/// and channels asynchronously (its tracking tables follow events), so the first attempt over
/// a limit may still pass there; each success is closed before the next try.
async fn refused_eventually<F, Fut>(t: &Target, mut attempt: F) -> lapin::Error
where
    F: FnMut() -> Fut,
    Fut: Future<Output = lapin::Result<Connection>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match attempt().await {
            Err(e) => return e,
            Ok(c) if tokio::time::Instant::now() < deadline => {
                close(c).await;
                tokio::task::yield_now().await;
            }
            Ok(_) => panic!("{t}: never refused within {WAIT:?}"),
        }
    }
}

/// The machine's own non-loopback address, if it has one (no packet is sent).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn guest_only_from_loopback() {
    let broker = warren_broker::Broker::builder()
        .listen("0.0.0.0:0".parse().unwrap())
        .start()
        .await
        .expect("broker");
    let port = broker.local_addr().port();
    let Some(ip) = non_loopback_ip() else {
        println!("skipped: this machine has no non-loopback address");
        return;
    };
    let url = format!("amqp://guest:guest@{ip}:{port}/%2f");
    let res = Connection::connect(&url, ConnectionProperties::default()).await;
    assert_eq!(
        res.as_ref().err().and_then(amqp_error),
        Some((403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.".to_owned())),
        "guest from {ip}"
    );
    let local = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    close(
        Connection::connect(&local, ConnectionProperties::default())
            .await
            .expect("guest from loopback"),
    )
    .await;
    broker.shutdown().await;
}

/// Keeps the entries of a RabbitMQ definitions export that belong to `user` and `vhost` (the
/// reference node is shared with other tests, whose entities are none of this test's business).
fn only_mine(defs: &Value, user: &str, vhost: &str) -> Value {
    let keep = |key: &str, f: &dyn Fn(&Value) -> bool| -> Value {
        Value::Array(
            defs[key]
                .as_array()
                .map(|a| a.iter().filter(|e| f(e)).cloned().collect())
                .unwrap_or_default(),
        )
    };
    let in_vhost = |e: &Value| e["vhost"] == vhost;
    json!({
        "rabbit_version": defs["rabbit_version"],
        "users": keep("users", &|e| e["name"] == user),
        "vhosts": keep("vhosts", &|e| e["name"] == vhost),
        "permissions": keep("permissions", &|e| e["user"] == user),
        "topic_permissions": keep("topic_permissions", &|e| e["user"] == user),
        "parameters": keep("parameters", &in_vhost),
        "queues": keep("queues", &in_vhost),
        "exchanges": keep("exchanges", &in_vhost),
        "bindings": keep("bindings", &in_vhost),
    })
}

fn find<'a>(defs: &'a Value, key: &str, field: &str, name: &str) -> &'a Value {
    defs[key]
        .as_array()
        .and_then(|a| a.iter().find(|e| e[field] == name))
        .unwrap_or_else(|| panic!("no {key} entry with {field} = {name} in {defs}"))
}

#[tokio::test]
async fn definitions_exported_by_rabbitmq_log_in_on_warren() {
    let rabbit = match Side::refnode() {
        Ok(side) => side,
        Err(why) => return println!("skipped: {why}"),
    };
    // On RabbitMQ: a user with a known password, its vhost, permissions, limits, topology.
    let (u, v, password) = (
        unique("u"),
        unique("vh"),
        format!("pw-{}", uuid::Uuid::new_v4()),
    );
    rabbit.user(&u, &password);
    rabbit.vhost(&v);
    rabbit.permit(&u, &v, "^cfg", ".*", ".*");
    rabbit.permit("guest", &v, ".*", ".*", ".*");
    rabbit.topic_permit(&u, &v, "amq.topic", "^a\\.", ".*");
    rabbit.vhost_limit(&v, "max-queues", 5);
    rabbit.user_limit(&u, &password, "max-connections", 7);
    let admin = rabbit.open("guest", "guest", &v).await;
    let ch = admin.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("dq".into(), durable, FieldTable::default())
        .await
        .expect("queue");
    let durable_x = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        "dx".into(),
        lapin::ExchangeKind::Direct,
        durable_x,
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    ch.queue_bind(
        "dq".into(),
        "dx".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    close(admin).await;
    let exported: Value = ureq::get(&format!(
        "{}/api/definitions",
        rabbit.mgmt.as_deref().unwrap()
    ))
    .set("Authorization", BASIC_GUEST)
    .call()
    .expect("GET /api/definitions")
    .into_json()
    .expect("definitions JSON");
    rabbit.cleanup();
    let mine = only_mine(&exported, &u, &v);
    let rabbit_user = find(&mine, "users", "name", &u).clone();
    assert_eq!(
        rabbit_user["hashing_algorithm"],
        "rabbit_password_hashing_sha256"
    );

    // Warren loads the file at boot (--definitions) into a data directory.
    let dir = std::env::temp_dir().join(unique("access-data"));
    let file = dir.with_extension("json");
    std::fs::write(&file, mine.to_string()).expect("write definitions");
    let start = |defs: bool| {
        let mut b = warren_broker::Broker::builder()
            .listen("127.0.0.1:0".parse().unwrap())
            .data_dir(&dir);
        if defs {
            b = b.definitions(&file);
        }
        b.start()
    };
    let broker = start(true).await.expect("start with definitions");
    let warren = format!("127.0.0.1:{}", broker.local_addr().port());
    let url = |user: &str, pw: &str| format!("amqp://{user}:{pw}@{warren}/{}", enc(&v));
    let conn = Connection::connect(&url(&u, &password), ConnectionProperties::default())
        .await
        .expect("RabbitMQ's user logs in on Warren with its password");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        "dq".into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("imported queue");
    let res = ch
        .queue_declare("other".into(), declare_opts(), FieldTable::default())
        .await;
    assert_eq!(
        res.as_ref().err().and_then(amqp_error),
        Some((
            403,
            format!(
                "ACCESS_REFUSED - access to queue 'other' in vhost '{v}' refused for user '{u}'"
            )
        )),
        "imported permissions are enforced"
    );
    close(conn).await;
    assert!(
        Connection::connect(&url(&u, "wrong"), ConnectionProperties::default())
            .await
            .is_err(),
        "a wrong password is refused"
    );

    // Warren's export carries the same entries (the hash unchanged).
    let out: Value = serde_json::from_str(&broker.export_definitions()).expect("export JSON");
    let user = find(&out, "users", "name", &u);
    assert_eq!(user["password_hash"], rabbit_user["password_hash"]);
    assert_eq!(user["limits"], json!({"max-connections": 7}));
    let perm = find(&out, "permissions", "user", &u);
    assert_eq!(
        (&perm["configure"], &perm["write"], &perm["read"]),
        (&json!("^cfg"), &json!(".*"), &json!(".*"))
    );
    assert_eq!(
        find(&out, "topic_permissions", "user", &u)["write"],
        "^a\\."
    );
    assert_eq!(
        find(&out, "parameters", "vhost", &v)["value"],
        json!({"max-queues": 5})
    );
    assert_eq!(find(&out, "exchanges", "name", "dx")["durable"], true);
    assert_eq!(find(&out, "bindings", "source", "dx")["destination"], "dq");

    // An import that fails half-way applies nothing.
    let bad = json!({"users": [{"name": "warren-test.half", "password": "pw", "tags": []}],
                     "permissions": [{"user": "warren-test.half", "vhost": "no-such-vhost",
                                      "configure": ".*", "write": ".*", "read": ".*"}]});
    assert!(broker.import_definitions(&bad.to_string()).is_err());
    let out: Value = serde_json::from_str(&broker.export_definitions()).expect("export JSON");
    assert!(!out["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == "warren-test.half"));

    // Users survive a restart from the data directory alone.
    broker.shutdown().await;
    drop(broker);
    let broker = start(false).await.expect("restart");
    let warren = format!("127.0.0.1:{}", broker.local_addr().port());
    let again = format!("amqp://{u}:{password}@{warren}/{}", enc(&v));
    close(
        Connection::connect(&again, ConnectionProperties::default())
            .await
            .expect("login after restart"),
    )
    .await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&file);
}

/// A permission revoked at run time applies to open channels at their next operation (the
/// channel's cache of granted checks is dropped by any change; RabbitMQ's internal backend
/// keeps a busy channel's cache, so it is not compared).
#[tokio::test]
async fn revoked_permissions_apply_to_open_channels() {
    let side = Side::bundled().await;
    let (u, v) = setup_user_and_vhost(&side);
    let conn = side.open(&u, "pw", &v).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut watch = close_watch(&ch).await.expect("close watch");
    let publish_on_ch = || async {
        ch.basic_publish(
            "amq.direct".into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
    };
    let ok = publish_on_ch()
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(matches!(ok, Confirmation::Ack(_)), "{ok:?}");
    side.permit(&u, &v, ".*", "^$", ".*");
    let _ = publish_on_ch().await;
    match tokio::time::timeout(WAIT, watch.next()).await {
        Ok(Some(Err(e))) => assert_eq!(
            amqp_error(&e),
            Some((403, format!("ACCESS_REFUSED - access to exchange 'amq.direct' in vhost '{v}' refused for user '{u}'"))),
            "publish after the revocation, same channel"
        ),
        other => panic!("expected the channel closed, got {other:?}"),
    }
    close(conn).await;
}
