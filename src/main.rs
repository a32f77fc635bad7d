use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let mut cli = ferry::cli::Cli::parse();
    if let ferry::cli::Command::Run(args) = &mut cli.command {
        args.log_format = cli.log_format;
    }
    let default = match cli.verbose {
        0 => "warn",
        1 => "ferry=debug,info",
        _ => "ferry=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(cli.verbose > 0);
    match cli.log_format {
        ferry::cli::LogFormat::Json => builder.json().init(),
        ferry::cli::LogFormat::Text => builder
            .with_ansi(
                std::env::var_os("NO_COLOR").is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .init(),
    }
    match ferry::app::main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", ferry::report::error_chain(e.as_ref()));
            ExitCode::from(ferry::app::exit_code(&e))
        }
    }
}
