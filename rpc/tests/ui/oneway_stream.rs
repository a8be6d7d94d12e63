#[warren_rpc::service]
pub trait Ticker {
    #[warren(oneway)]
    async fn ticks(&self, n: u32) -> warren_rpc::Stream<u32>;
}

fn main() {}
