#[warren_rpc::service(name = calculator)]
pub trait Calculator {
    async fn add(&self, a: i64, b: i64) -> i64;
}

#[warren_rpc::service(queue = "x")]
pub trait Other {
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
