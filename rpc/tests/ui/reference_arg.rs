#[warren_rpc::service]
pub trait Greeter {
    async fn greet(&self, name: &str) -> String;
    async fn total(&self, values: Vec<&'static u8>) -> u64;
}

fn main() {}
