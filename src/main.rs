use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let mut cli = match ferry::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match &mut cli.command {
        ferry::cli::Command::Run(args) => args.log_format = cli.log_format,
        ferry::cli::Command::Verify(args) => args.log_format = cli.log_format,
        ferry::cli::Command::Restore(args) => args.log_format = cli.log_format,
        _ => {}
    }
    let json = cli.log_format == ferry::cli::LogFormat::Json;
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
            let line = format!("error: {}", ferry::report::hints::chain(e.as_ref()));
            eprintln!("{}", ferry::app::log_line(json, "ERROR", &line));
            ExitCode::from(ferry::app::exit_code(&e))
        }
    }
}

/// clap's refusal of the command line (exit 2), or `--help`/`--version` (exit 0, printed as
/// asked). Under `--log-format json` a refusal is a JSON line like every other error; the
/// format is read from the raw arguments, since they did not parse.
fn usage_error(e: clap::Error) -> ExitCode {
    let code = ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let json = args.iter().enumerate().any(|(i, a)| {
        a == "--log-format=json"
            || (a == "--log-format" && args.get(i + 1).map(String::as_str) == Some("json"))
    });
    if json && e.use_stderr() {
        let text = e.render().to_string();
        eprintln!("{}", ferry::report::json_line("ERROR", text.trim_end()));
    } else {
        let _ = e.print();
    }
    code
}
