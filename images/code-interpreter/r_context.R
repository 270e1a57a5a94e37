# An R context of Fast Sandbox's code interpreter (code_interpreter.py starts one per context, as its
# worker's child: `Rscript --vanilla r_context.R REQUESTS_FD RESULTS_FD`). Each execution is parsed
# and its top-level expressions are evaluated one by one in the global environment, as the R console
# does, so variables, functions and loaded packages live on between executions. Every visible value
# is shown as R's print() shows it (a data frame or a matrix also as an HTML table); the last
# expression's is the execution's main result, the others
# are results shown on the way (as IRkernel displays each). Warnings are written to stderr as they
# happen ("Warning message:"), and so are message()s (R's own); an error ends the execution as its
# error: its name the condition's class ("Error" for stop()'s), its value the message, and its
# traceback what R prints for it, with the calls that led to it. SIGINT interrupts the running
# execution and the context keeps its state. Plots are results too, as in a notebook: when R has
# cairo, the default graphics device is a PNG file per page, and the devices a run opened that way
# are closed at its end and their pages shown (`display_png PATH`, before the outcome).
#
# Protocol (R's base packages have no JSON, so the fields are length-prefixed): a message is a line
# with its number of fields, then each field as a line with its length in bytes and the bytes.
# - requests (REQUESTS_FD): the code, then the run's environment variables as name and value pairs;
# - results (RESULTS_FD), for each request: any number of `display TEXT [HTML]` and
#   `display_png PATH` messages (the worker reads and removes the file), then `ok` or
#   `ok TEXT [HTML]` (the main result), or `error NAME VALUE TRACEBACK`.
# What the code prints goes to stdout and stderr, which the worker streams.
#
# This file's functions live in an environment of their own under base's, not the global one: the
# code's own definitions (a `sprintf` or `c` of its own) do not reach them. The protocol's
# connections are opened again when the code closed them (closeAllConnections()): the pipes stay
# open underneath. An interrupt counts only while the code runs: one that comes while this file
# waits for a request or sends an outcome (late for the run before) is dropped.
local({
  fds <- commandArgs(trailingOnly = TRUE)
  paths <- sprintf("/proc/self/fd/%s", fds[1:2])
  requests <- file(paths[[1]], open = "rb", raw = TRUE)
  results <- file(paths[[2]], open = "wb", raw = TRUE)
  newline <- as.raw(10L)

  # The connection, or a new one on the same pipe when the code closed it (no bytes are lost: the
  # worker sends a request only once the previous outcome is out). Its number may belong to another
  # connection since: the one it was is told by its id.
  usable <- function(connection, path, mode) {
    now <- tryCatch(getConnection(as.integer(connection)), error = function(e) NULL)
    if (!is.null(now) && identical(attr(now, "conn_id"), attr(connection, "conn_id"))) return(connection)
    file(path, open = mode, raw = TRUE)
  }

  read_line <- function() {
    requests <<- usable(requests, paths[[1]], "rb")
    bytes <- raw(0)
    repeat {
      byte <- readBin(requests, "raw", 1L)
      if (length(byte) == 0L) return(NULL)
      if (byte == newline) return(rawToChar(bytes))
      bytes <- c(bytes, byte)
    }
  }

  read_field <- function() {
    size <- read_line()
    if (is.null(size)) return(NULL)
    size <- as.numeric(size)
    bytes <- raw(0)
    while (length(bytes) < size) {
      chunk <- readBin(requests, "raw", size - length(bytes))
      if (length(chunk) == 0L) return(NULL)
      bytes <- c(bytes, chunk)
    }
    # NUL cannot be in an R string: the code is refused by its parse instead.
    bytes[bytes == as.raw(0L)] <- as.raw(0x1aL)
    text <- rawToChar(bytes)
    Encoding(text) <- "UTF-8"
    text
  }

  read_request <- function() {
    count <- read_line()
    if (is.null(count)) return(NULL)
    fields <- vapply(seq_len(as.integer(count)), function(i) {
      field <- read_field()
      if (is.null(field)) NA_character_ else field
    }, "")
    if (anyNA(fields)) return(NULL)
    fields
  }

  write_message <- function(...) {
    results <<- usable(results, paths[[2]], "wb")
    fields <- c(...)
    encoded <- lapply(fields, function(field) {
      bytes <- charToRaw(enc2utf8(field))
      c(charToRaw(sprintf("%d\n", length(bytes))), bytes)
    })
    writeBin(c(charToRaw(sprintf("%d\n", length(fields))), unlist(encoded)), results)
    flush(results)
  }

  # A value as a result: print()'s text, and for a data frame or a matrix an HTML table too (as
  # IRkernel's: a caption with its class and size, the first HTML_ROWS rows).
  HTML_ROWS <- 60L
  escape <- function(text) {
    text <- gsub("&", "&amp;", text, fixed = TRUE)
    text <- gsub("<", "&lt;", text, fixed = TRUE)
    gsub(">", "&gt;", text, fixed = TRUE)
  }
  html_table <- function(value) {
    if (!is.data.frame(value) && !(is.matrix(value) && length(dim(value)) == 2L)) return(NULL)
    kind <- if (is.data.frame(value)) "data.frame" else "matrix"
    rows <- nrow(value)
    shown_rows <- utils::head(value, HTML_ROWS)
    cells <- as.matrix(format(if (is.data.frame(shown_rows)) shown_rows else as.data.frame(shown_rows, stringsAsFactors = FALSE)))
    cells[is.na(cells)] <- "NA"
    cells <- trimws(cells)
    row_of <- function(tag, texts) if (length(texts) > 0L) paste0("<", tag, ">", escape(texts), "</", tag, ">", collapse = "") else ""
    names <- colnames(value)
    if (is.null(names)) names <- if (ncol(value) > 0L) sprintf("[,%d]", seq_len(ncol(value))) else character(0)
    row_names <- rownames(shown_rows)
    if (is.null(row_names)) row_names <- if (nrow(cells) > 0L) sprintf("[%d,]", seq_len(nrow(cells))) else character(0)
    caption <- sprintf("A %s: %d × %d%s", kind, rows, ncol(value), if (rows > HTML_ROWS) sprintf(" (the first %d rows)", HTML_ROWS) else "")
    head_row <- paste0("<tr><th></th>", row_of("th", names), "</tr>")
    body <- vapply(seq_len(nrow(cells)), function(r) paste0("<tr>", row_of("th", row_names[[r]]), row_of("td", cells[r, ]), "</tr>"), "")
    paste0("<table>\n<caption>", caption, "</caption>\n<thead>", head_row, "</thead>\n<tbody>\n", paste(body, collapse = "\n"), "\n</tbody>\n</table>")
  }
  shown <- function(value) {
    # Printed from the global environment, so that print methods of the code's own are found.
    text <- paste(utils::capture.output(eval(quote(print(value)), list(value = value), globalenv())), collapse = "\n")
    html <- tryCatch(html_table(value), error = function(e) NULL)
    c(text, html)
  }

  # The runs' plots: pages of PNG devices opened through options(device) (plot() and friends open
  # the default device), in a directory of this context's.
  plots <- tempfile("fsb-plots-")
  dir.create(plots, mode = "0700")
  opened <- integer(0)
  if (isTRUE(capabilities("cairo"))) {
    options(device = function(...) {
      file <- file.path(plots, sprintf("plot-%d-%%03d.png", length(opened) + 1L))
      grDevices::png(file, width = 7, height = 5, units = "in", res = 100, type = "cairo")
      opened <<- c(opened, grDevices::dev.cur())
    })
  }

  show_plots <- function() {
    for (device in opened) if (device %in% grDevices::dev.list()) grDevices::dev.off(device)
    opened <<- integer(0)
    files <- list.files(plots, pattern = "^plot-.*[.]png$", full.names = TRUE)
    numbers <- as.integer(sub("^plot-(\\d+)-(\\d+)[.]png$", "\\1", basename(files))) * 10000L +
      as.integer(sub("^plot-(\\d+)-(\\d+)[.]png$", "\\2", basename(files)))
    for (file in files[order(numbers)]) write_message("display_png", file)
  }

  call_text <- function(call) paste(deparse(call, nlines = 1L), collapse = "")

  # The call a condition names, unless it is this file's evaluation of a top-level expression (the
  # console names none there).
  evaluated <- quote(eval(expressions[[i]], envir = globalenv()))
  call_of <- function(condition) {
    call <- conditionCall(condition)
    if (identical(call, evaluated)) NULL else call
  }

  # R's own words for an error: `Error in f(x) : message` (`Error: message` without a call), then
  # the calls that led to it, as Rscript prints them.
  error_text <- function(condition, calls) {
    call <- call_of(condition)
    head <- if (is.null(call)) "Error: " else sprintf("Error in %s : ", call_text(call))
    text <- paste0(head, conditionMessage(condition))
    if (length(calls) > 0L) {
      names <- vapply(calls, function(c) {
        f <- c[[1L]]
        if (is.name(f)) as.character(f) else call_text(f)
      }, "")
      text <- paste0(text, "\nCalls: ", paste(names, collapse = " -> "))
    }
    text
  }

  error_name <- function(condition) {
    class <- class(condition)[[1L]]
    if (class %in% c("simpleError", "error")) "Error" else class
  }

  warned <- function(warning) {
    call <- call_of(warning)
    where <- if (is.null(call)) "" else sprintf("In %s : ", call_text(call))
    cat("Warning message:\n", where, conditionMessage(warning), "\n", sep = "", file = stderr())
    invokeRestart("muffleWarning")
  }

  # The outcome of a run an interrupt ended.
  interrupted <- c("error", "KeyboardInterrupt", "the execution was interrupted", "KeyboardInterrupt: the execution was interrupted")

  run <- function(code) {
    expressions <- tryCatch(parse(text = code, keep.source = FALSE), error = function(e) e)
    if (inherits(expressions, "error")) {
      message <- sub("^<text>:", "", conditionMessage(expressions))
      return(c("error", "Error", message, paste0("Error: ", message)))
    }
    last <- length(expressions)
    for (i in seq_len(last)) {
      calls <- NULL
      outcome <- tryCatch(
        withCallingHandlers(
          {
            value <- withVisible(eval(expressions[[i]], envir = globalenv()))
            if (value$visible) shown(value$value) else NULL
          },
          warning = warned,
          error = function(e) {
            # The calls from the code's own down to the error's: after this file's eval of the
            # expression, before the handler's frames and the stop() itself (as Rscript lists them).
            stack <- sys.calls()[seq_len(sys.nframe() - 1L)]
            ours <- which(vapply(stack, function(c) identical(c, evaluated), NA))
            stack <- stack[-seq_len(if (length(ours) > 0L) max(ours) else 0L)]
            trailing <- function(name) length(stack) > 0L && identical(stack[[length(stack)]][[1L]], as.name(name))
            if (trailing(".handleSimpleError")) stack <- stack[-length(stack)]
            if (trailing("stop")) stack <- stack[-length(stack)]
            calls <<- stack
          }
        ),
        error = function(e) structure(list(condition = e), class = "fsb_error"),
        interrupt = function(i) structure(list(), class = "fsb_interrupt")
      )
      if (inherits(outcome, "fsb_interrupt")) {
        return(interrupted)
      }
      if (inherits(outcome, "fsb_error")) {
        condition <- outcome$condition
        return(c("error", error_name(condition), conditionMessage(condition), error_text(condition, calls)))
      }
      if (i == last) return(c("ok", outcome))
      if (!is.null(outcome)) write_message("display", outcome)
    }
    "ok"
  }

  # One request and its outcome; FALSE once the worker is gone. Interrupts are held off but while
  # the code runs.
  serve <- function() {
    request <- read_request()
    if (is.null(request)) return(FALSE)
    # One that came while this waited (late for the run before) is let in and dropped here.
    tryCatch(allowInterrupts(Sys.sleep(0)), interrupt = function(i) NULL)
    code <- request[[1L]]
    env <- request[-1L]
    names <- env[c(TRUE, FALSE)]
    values <- env[c(FALSE, TRUE)]
    # A run's env_vars are that run's alone: afterwards those names get their values back (or go),
    # unless the code set them itself.
    before <- Sys.getenv(names, unset = NA, names = TRUE)
    if (length(names) > 0L) do.call(Sys.setenv, as.list(stats::setNames(values, names)))
    outcome <- tryCatch(allowInterrupts(run(code)), interrupt = function(i) interrupted)
    tryCatch(show_plots(), error = function(e) cat("the run's plots could not be shown:", conditionMessage(e), "\n", file = stderr()))
    for (k in seq_along(names)) {
      if (!identical(Sys.getenv(names[[k]], unset = NA), values[[k]])) next
      if (is.na(before[[k]])) Sys.unsetenv(names[[k]]) else do.call(Sys.setenv, stats::setNames(list(before[[k]]), names[[k]]))
    }
    # What the code printed is out before its outcome (the worker syncs its pipes after).
    flush(stdout())
    flush(stderr())
    write_message(outcome)
    TRUE
  }

  while (suspendInterrupts(serve())) NULL
}, envir = new.env(parent = baseenv()))
