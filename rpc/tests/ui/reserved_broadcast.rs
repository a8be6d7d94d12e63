#[warren_rpc::service]
pub trait Radio {
    async fn broadcast(&self, text: String);
}

fn main() {}
