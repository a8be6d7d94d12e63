//! Validation of queue arguments (`x-...`), with RabbitMQ's errors for bad types or values.

use super::fieldtable::{type_name, value_int, value_string};
use crate::core::error::{AmqpError, AmqpResult};
use amq_protocol::types::{AMQPValue, FieldTable};

/// The largest TTL or expiry RabbitMQ 3.x accepts (its timers' limit), in milliseconds.
const MAX_EXPIRY: i128 = 4_294_967_295;

fn invalid(arg: &str, queue: &str, vhost: &str, reason: String) -> AmqpError {
    AmqpError::precondition(format!(
        "invalid arg '{arg}' for queue '{queue}' in vhost '{vhost}': {reason}"
    ))
}

fn not_integer(v: &AMQPValue) -> String {
    format!("\"expected integer, got {}\"", type_name(v))
}

fn unacceptable(v: &AMQPValue) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

/// Checks the arguments of a queue being created.
pub(crate) fn validate_queue_args(queue: &str, vhost: &str, args: &FieldTable) -> AmqpResult<()> {
    for (k, v) in args.inner() {
        let k = k.as_str();
        match k {
            "x-message-ttl" | "x-max-length" | "x-max-length-bytes" => match value_int(v) {
                None => return Err(invalid(k, queue, vhost, not_integer(v))),
                Some(n) if n < 0 => {
                    return Err(invalid(k, queue, vhost, format!("{{value_negative,{n}}}")))
                }
                Some(n) if k == "x-message-ttl" && n > MAX_EXPIRY => {
                    return Err(invalid(k, queue, vhost, format!("{{value_too_large,{n}}}")))
                }
                _ => {}
            },
            "x-expires" => match value_int(v) {
                None => return Err(invalid(k, queue, vhost, not_integer(v))),
                Some(0) => return Err(invalid(k, queue, vhost, "{value_zero,0}".into())),
                Some(n) if n > MAX_EXPIRY => {
                    return Err(invalid(k, queue, vhost, format!("{{value_too_large,{n}}}")))
                }
                Some(n) if n < 0 => {
                    return Err(invalid(k, queue, vhost, format!("{{value_negative,{n}}}")))
                }
                _ => {}
            },
            "x-max-priority" => match value_int(v) {
                None => return Err(invalid(k, queue, vhost, not_integer(v))),
                Some(n) if n < 0 => {
                    return Err(invalid(k, queue, vhost, format!("{{value_negative,{n}}}")))
                }
                Some(n) if n > 255 => {
                    return Err(invalid(
                        k,
                        queue,
                        vhost,
                        format!("{{max_value_exceeded,{n}}}"),
                    ))
                }
                _ => {}
            },
            "x-dead-letter-exchange" | "x-dead-letter-routing-key" if value_string(v).is_none() => {
                return Err(invalid(k, queue, vhost, unacceptable(v)));
            }
            "x-dead-letter-routing-key" if !args.contains_key("x-dead-letter-exchange") => {
                return Err(invalid(
                    k,
                    queue,
                    vhost,
                    "routing_key_but_no_dlx_defined".into(),
                ));
            }
            "x-queue-mode" => match value_string(v).as_deref() {
                Some("default" | "lazy") => {}
                Some(other) => {
                    return Err(invalid(
                        k,
                        queue,
                        vhost,
                        format!("\"unsupported queue mode '{other}'\""),
                    ))
                }
                None => return Err(invalid(k, queue, vhost, unacceptable(v))),
            },
            "x-overflow" => match value_string(v).as_deref() {
                Some("drop-head" | "reject-publish" | "reject-publish-dlx") => {}
                Some(_) => return Err(invalid(k, queue, vhost, "invalid_overflow".into())),
                None => return Err(invalid(k, queue, vhost, unacceptable(v))),
            },
            "x-single-active-consumer" if !matches!(v, AMQPValue::Boolean(_)) => {
                return Err(invalid(k, queue, vhost, unacceptable(v)));
            }
            "x-queue-type" => match value_string(v).as_deref() {
                Some("classic") => {}
                Some(other @ ("quorum" | "stream")) => {
                    return Err(AmqpError::precondition(format!(
                        "invalid arg 'x-queue-type' for queue '{queue}' in vhost '{vhost}': \
                         queue type '{other}' is not supported by this broker (warren-broker is \
                         not clustered; use classic queues, or RabbitMQ for {other} queues)"
                    )))
                }
                Some(other) => {
                    return Err(invalid(
                        k,
                        queue,
                        vhost,
                        format!("\"unsupported queue type '{other}'\""),
                    ))
                }
                None => return Err(invalid(k, queue, vhost, unacceptable(v))),
            },
            _ => {}
        }
    }
    Ok(())
}
