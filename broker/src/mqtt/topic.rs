//! Topics: RabbitMQ's translation between MQTT topics and AMQP routing keys on `amq.topic`.
//!
//! MQTT -> AMQP replaces `/` with `.` and `+` with `*` (`#` means the same in both); AMQP ->
//! MQTT replaces `*` with `+` and `.` with `/`. As in RabbitMQ, nothing else is escaped: an
//! MQTT topic containing `.` reaches AMQP with an extra word boundary.

/// The AMQP routing key (or binding key) of an MQTT topic (or topic filter).
pub(crate) fn to_amqp(topic: &str) -> String {
    topic.replace('/', ".").replace('+', "*")
}

/// The MQTT topic of an AMQP routing key.
pub(crate) fn to_mqtt(routing_key: &str) -> String {
    routing_key.replace('*', "+").replace('.', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_topics_as_rabbitmq() {
        assert_eq!(to_amqp("a/+/c/#"), "a.*.c.#");
        assert_eq!(to_amqp("/a"), ".a");
        assert_eq!(to_mqtt("a.*.c.#"), "a/+/c/#");
        assert_eq!(to_mqtt("x.y"), "x/y");
    }
}
