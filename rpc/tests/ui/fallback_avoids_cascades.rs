// One mistake in the trait is reported once: the impl and the uses of the generated types
// below compile against the fallback expansion instead of failing too.
#[warren_rpc::service]
pub trait Calculator {
    fn add(&self, a: i64, b: i64) -> i64;
}

struct Calc;

impl Calculator for Calc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn main() {
    let _server = CalculatorServer::new(Calc);
}
