#[warren_rpc::service]
pub trait Calculator {
    #[warren(idempotant)]
    async fn add(&self, a: i64, b: i64) -> i64;
    #[warren(timeout_ms = "fast")]
    async fn sub(&self, a: i64, b: i64) -> i64;
}

fn main() {}
