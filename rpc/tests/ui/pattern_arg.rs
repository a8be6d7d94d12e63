#[warren_rpc::service]
pub trait Geometry {
    async fn norm(&self, (x, y): (f64, f64)) -> f64;
    async fn ignore(&self, _: u8);
}

fn main() {}
