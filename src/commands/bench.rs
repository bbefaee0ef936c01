pub(super) async fn bench(
    _u: Option<String>,
    _a: crate::cli::BenchArgs,
) -> Result<(), super::CommandError> {
    todo!()
}
