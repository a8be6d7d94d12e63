//! The calculator service of the Warren examples, shared by the example programs and the
//! end-to-end tests.
//!
//! [`Calculator`] is the schema (service name `calculator`); [`Calc`] is an implementation with
//! a server-side memory. Run the all-in-one demo with `cargo run -p warren-examples --example
//! calculator`.
#![deny(missing_docs)]

pub mod auth;
mod tls_args;

pub use tls_args::TlsArgs;

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};
use warren_rpc::Stream;

/// Why a calculation has no answer: an application error, returned as `{"err": ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CalcError {
    /// The divisor was zero.
    #[error("division by zero")]
    DivisionByZero,
    /// The result does not fit in an i64 (`i64::MIN / -1`).
    #[error("the result overflows a 64-bit integer")]
    Overflow,
}

/// A calculator with a memory, served as the `calculator` service.
#[warren_rpc::service]
pub trait Calculator {
    /// `a + b`, wrapping on overflow.
    #[warren(idempotent)]
    async fn add(&self, a: i64, b: i64) -> i64;

    /// `a - b`, wrapping on overflow.
    #[warren(idempotent)]
    async fn sub(&self, a: i64, b: i64) -> i64;

    /// `a * b`, wrapping on overflow.
    #[warren(idempotent)]
    async fn mul(&self, a: i64, b: i64) -> i64;

    /// `a / b` rounded toward zero; dividing by zero is an application error.
    #[warren(idempotent)]
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;

    /// Adds `x` to the server-side total and returns the new total. Not idempotent: the server
    /// de-duplicates resent calls by call id.
    async fn memory_add(&self, x: i64) -> i64;

    /// The server-side total.
    #[warren(idempotent)]
    async fn memory_recall(&self) -> i64;

    /// The first `n` Fibonacci numbers (0, 1, 1, 2, ...), wrapping on overflow, streamed one by
    /// one as the caller takes them.
    async fn fibonacci(&self, n: u32) -> Stream<u64>;
}

/// The calculator implementation: stateless arithmetic and an atomic memory.
#[derive(Debug, Default)]
pub struct Calc {
    memory: AtomicI64,
}

impl Calc {
    /// A calculator whose memory holds zero.
    pub fn new() -> Self {
        Calc::default()
    }
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> i64 {
        a.wrapping_add(b)
    }

    async fn sub(&self, a: i64, b: i64) -> i64 {
        a.wrapping_sub(b)
    }

    async fn mul(&self, a: i64, b: i64) -> i64 {
        a.wrapping_mul(b)
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            return Err(CalcError::DivisionByZero);
        }
        a.checked_div(b).ok_or(CalcError::Overflow)
    }

    async fn memory_add(&self, x: i64) -> i64 {
        // fetch_add wraps on overflow; report the wrapped total consistently.
        self.memory.fetch_add(x, Ordering::SeqCst).wrapping_add(x)
    }

    async fn memory_recall(&self) -> i64 {
        self.memory.load(Ordering::SeqCst)
    }

    async fn fibonacci(&self, n: u32) -> Stream<u64> {
        let pairs =
            std::iter::successors(Some((0u64, 1u64)), |&(a, b)| Some((b, a.wrapping_add(b))));
        let count = usize::try_from(n).unwrap_or(usize::MAX);
        Stream::iter(pairs.map(|(a, _)| a).take(count))
    }
}

/// An arithmetic operation of the calculator, with the answer computed locally, for clients
/// that check every result (the load client, the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `add(a, b)`
    Add(i64, i64),
    /// `sub(a, b)`
    Sub(i64, i64),
    /// `mul(a, b)`
    Mul(i64, i64),
    /// `div(a, b)`
    Div(i64, i64),
}

impl Op {
    /// A pseudo-random operation with small operands (so results are easy to read), picked
    /// from `seed`; about one in sixteen divisions divides by zero.
    pub fn from_seed(seed: u64) -> Op {
        let a = (seed % 2001) as i64 - 1000;
        let b = ((seed / 2001) % 201) as i64 - 100;
        match (seed / 2001 / 201) % 4 {
            0 => Op::Add(a, b),
            1 => Op::Sub(a, b),
            2 => Op::Mul(a, b),
            _ => Op::Div(a, b / 8),
        }
    }

    /// The answer the server must give.
    pub fn expected(self) -> Result<i64, CalcError> {
        match self {
            Op::Add(a, b) => Ok(a.wrapping_add(b)),
            Op::Sub(a, b) => Ok(a.wrapping_sub(b)),
            Op::Mul(a, b) => Ok(a.wrapping_mul(b)),
            Op::Div(_, 0) => Err(CalcError::DivisionByZero),
            Op::Div(a, b) => a.checked_div(b).ok_or(CalcError::Overflow),
        }
    }

    /// Calls the operation on `client`: the outer `Result` is the framework's.
    pub async fn call(
        self,
        client: &CalculatorClient,
    ) -> Result<Result<i64, CalcError>, warren_rpc::Error> {
        match self {
            Op::Add(a, b) => client.add(a, b).await.map(Ok),
            Op::Sub(a, b) => client.sub(a, b).await.map(Ok),
            Op::Mul(a, b) => client.mul(a, b).await.map(Ok),
            Op::Div(a, b) => client.div(a, b).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_rpc::{Codec, Outcome, Request, Service};

    /// The generated server can be driven without a broker.
    #[tokio::test]
    async fn dispatch_without_a_broker() {
        let server = CalculatorServer::new(Calc::new());
        assert_eq!(server.name(), "calculator");
        let outcome = server
            .dispatch(Request::new(
                "add",
                Codec::Json,
                br#"{"a":2,"b":3}"#.to_vec(),
            ))
            .await;
        assert_eq!(outcome, Outcome::Ok(br#"{"ok":5}"#.to_vec()));
        let outcome = server
            .dispatch(Request::new(
                "div",
                Codec::Json,
                br#"{"a":2,"b":0}"#.to_vec(),
            ))
            .await;
        assert_eq!(
            outcome,
            Outcome::Err(br#"{"err":"DivisionByZero"}"#.to_vec())
        );
        let outcome = server
            .dispatch(Request::new("pow", Codec::Json, b"{}".to_vec()))
            .await;
        assert!(
            matches!(outcome, Outcome::Fault(f) if f.code == warren_rpc::FaultCode::UnknownMethod)
        );
        let outcome = server
            .dispatch(Request::new("add", Codec::Json, br#"{"a":"x"}"#.to_vec()))
            .await;
        assert!(
            matches!(outcome, Outcome::Fault(f) if f.code == warren_rpc::FaultCode::BadRequest)
        );
        // A streamed reply awaited as one future collects its items.
        let outcome = server
            .dispatch(Request::new(
                "fibonacci",
                Codec::Json,
                br#"{"n":7}"#.to_vec(),
            ))
            .await;
        assert_eq!(outcome, Outcome::Ok(br#"{"ok":[0,1,1,2,3,5,8]}"#.to_vec()));
    }

    #[test]
    fn ops_agree_with_the_calculator() {
        for seed in 0..10_000u64 {
            let op = Op::from_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            if let Op::Div(a, b) = op {
                assert_eq!(op.expected().is_err(), b == 0 || (a == i64::MIN && b == -1));
            }
        }
    }

    #[test]
    fn method_table() {
        let names: Vec<&str> = CalculatorClient::METHODS.iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            [
                "add",
                "sub",
                "mul",
                "div",
                "memory_add",
                "memory_recall",
                "fibonacci"
            ]
        );
        assert!(!CalculatorClient::METHODS[4].idempotent);
        assert!(CalculatorClient::METHODS[0].idempotent);
        assert!(CalculatorClient::METHODS[6].streaming);
        assert!(!CalculatorClient::METHODS[0].streaming);
    }
}
