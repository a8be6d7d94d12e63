use warren_rpc::Stream;

#[warren_rpc::service]
pub trait Ticker {
    async fn ticks(&self, n: u32) -> Stream;
    async fn pairs(&self, n: u32) -> warren_rpc::Stream<u32, u32>;
}

fn main() {}
