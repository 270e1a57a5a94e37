/*
 * A Java context of Fast Sandbox's code interpreter (code_interpreter.py starts one per context, as
 * its worker's child: `java -cp DIR JavaContext REQUESTS_FD RESULTS_FD`). Executions run in a JShell
 * (the JDK's own Java shell, its execution engine in this process) that lives as long as the
 * context, so variables, methods, classes and imports live on between executions. Each execution is
 * cut into JShell's snippets (statements, declarations, expressions) and they are evaluated in
 * order; the last one's value, when it is an expression, is the execution's result, as JShell shows
 * it ("hello" with its quotes, 42, [1, 2]). A snippet that does not compile, or throws, ends the
 * execution as its error: `CompilationException` with the compiler's messages, or the exception's
 * class name, message and stack trace (the user's frames). What the code prints goes to stdout and
 * stderr, which the worker streams. SIGINT stops the running execution (JShell's stop) and the
 * context keeps its state. JShell's default imports (java.util.*, java.io.*, java.util.stream.*…)
 * are made at start, as the jshell tool makes them.
 *
 * Protocol (as r_context.R's): a message is a line with its number of fields, then each field as a
 * line with its length in bytes and the bytes (UTF-8).
 * - requests (REQUESTS_FD): the code, then the run's environment variables as name and value pairs
 *   (set for the run in the environment System.getenv reads; processes the code starts inherit the
 *   context's own environment unless given ProcessBuilder.environment());
 * - results (RESULTS_FD), for each request: `ok` or `ok TEXT` (the result), or `error NAME VALUE TRACEBACK`.
 */
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.stream.Collectors;
import jdk.jshell.DeclarationSnippet;
import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.JShellException;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;

public final class JavaContext {
  private static final String[] DEFAULT_IMPORTS = {
    "java.io.*", "java.math.*", "java.net.*", "java.nio.file.*", "java.util.*", "java.util.concurrent.*",
    "java.util.function.*", "java.util.prefs.*", "java.util.regex.*", "java.util.stream.*",
  };

  private final InputStream requests;
  private final OutputStream results;
  private final JShell shell;
  private volatile boolean stopped;

  private JavaContext(InputStream requests, OutputStream results) {
    this.requests = requests;
    this.results = results;
    this.shell = JShell.builder().executionEngine("local").in(InputStream.nullInputStream()).out(System.out).err(System.err).build();
    for (String imported : DEFAULT_IMPORTS) {
      for (SnippetEvent event : shell.eval("import " + imported + ";")) {
        if (event.status() == Snippet.Status.REJECTED) throw new IllegalStateException("JShell refused its default import of " + imported);
      }
    }
  }

  public static void main(String[] args) throws IOException {
    InputStream requests = new BufferedInputStream(new FileInputStream("/proc/self/fd/" + args[0]));
    OutputStream results = new BufferedOutputStream(new FileOutputStream("/proc/self/fd/" + args[1]));
    JavaContext context = new JavaContext(requests, results);
    sun.misc.Signal.handle(new sun.misc.Signal("INT"), signal -> context.stop());
    context.serve();
  }

  private void stop() {
    stopped = true;
    shell.stop();
  }

  private void serve() throws IOException {
    for (;;) {
      List<String> request = readMessage();
      if (request == null) return;
      Map<String, String> before = new HashMap<>();
      Map<String, String> runEnv = new HashMap<>();
      for (int i = 1; i + 1 < request.size(); i += 2) runEnv.put(request.get(i), request.get(i + 1));
      List<String> outcome;
      try {
        for (String name : runEnv.keySet()) before.put(name, System.getenv(name));
        setEnv(runEnv);
        stopped = false;
        outcome = run(request.get(0));
      } catch (Throwable failure) {
        // What escapes JShell itself (javac's StackOverflowError on deeply nested code, an
        // OutOfMemoryError) is the run's error: the context lives on.
        String message = failure.getMessage() == null ? failure.getClass().getName() : failure.getMessage();
        outcome = List.of("error", failure.getClass().getSimpleName(), message, failure.toString());
      }
      // A run's env vars are that run's alone, unless the code changed them (it cannot, in Java).
      try {
        setEnv(before);
      } catch (ReflectiveOperationException ignored) {
        // nothing was set
      }
      System.out.flush();
      System.err.flush();
      writeMessage(outcome);
    }
  }

  private List<String> run(String code) {
    SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
    List<String> snippets = new ArrayList<>();
    String remaining = code;
    while (!remaining.isBlank()) {
      SourceCodeAnalysis.CompletionInfo info = analysis.analyzeCompletion(remaining);
      SourceCodeAnalysis.Completeness completeness = info.completeness();
      if (completeness == SourceCodeAnalysis.Completeness.EMPTY) break;
      if (!completeness.isComplete()) {
        // Incomplete or unknown: JShell's eval says what is wrong with it.
        snippets.add(remaining);
        break;
      }
      snippets.add(info.source());
      remaining = info.remaining();
    }
    String value = null;
    for (int index = 0; index < snippets.size(); index++) {
      value = null;
      for (SnippetEvent event : shell.eval(snippets.get(index))) {
        if (event.causeSnippet() != null) continue;
        Snippet snippet = event.snippet();
        if (event.status() == Snippet.Status.REJECTED) {
          String messages = shell.diagnostics(snippet).map(diag -> describe(diag, snippet)).collect(Collectors.joining("\n"));
          if (messages.isEmpty()) messages = "the code is not complete Java: " + snippet.source().strip();
          return List.of("error", "CompilationException", messages, messages);
        }
        if (event.status() == Snippet.Status.RECOVERABLE_DEFINED || event.status() == Snippet.Status.RECOVERABLE_NOT_DEFINED) {
          // Recoverable: JShell kept it for names declared later. An error besides those (a
          // constant string too long) is the run's; otherwise it says what it waits for. Both as
          // the jshell tool does (which, like this, keeps such a snippet).
          String errors = shell.diagnostics(snippet).filter(Diag::isError).map(diag -> describe(diag, snippet)).collect(Collectors.joining("\n"));
          if (!errors.isEmpty()) return List.of("error", "CompilationException", errors, errors);
          if (snippet instanceof DeclarationSnippet) {
            String missing = shell.unresolvedDependencies((DeclarationSnippet) snippet).collect(Collectors.joining(", "));
            System.err.println(((DeclarationSnippet) snippet).name() + " is declared, but cannot be used until " + (missing.isEmpty() ? "what it needs" : missing) + " is declared");
          }
        }
        JShellException exception = event.exception();
        if (exception != null) return thrown(exception);
        if (stopped) return List.of("error", "KeyboardInterrupt", "the execution was stopped", "KeyboardInterrupt: the execution was stopped");
        if (isExpression(snippet)) value = event.value();
      }
    }
    return value == null ? List.of("ok") : List.of("ok", value);
  }

  private static boolean isExpression(Snippet snippet) {
    return snippet.kind() == Snippet.Kind.EXPRESSION
        || (snippet.kind() == Snippet.Kind.VAR && snippet.subKind() == Snippet.SubKind.TEMP_VAR_EXPRESSION_SUBKIND);
  }

  private static String describe(Diag diag, Snippet snippet) {
    // Without javac's `location: class` line, which names JShell's wrapper (nothing of the code's).
    String message = diag.getMessage(Locale.ROOT).replaceAll("\n\\s*location: class\\s*$", "");
    long at = diag.getStartPosition();
    String source = snippet.source();
    if (at < 0 || at > source.length()) return message;
    int line = 1;
    for (int i = 0; i < at; i++) if (source.charAt(i) == '\n') line++;
    return "line " + line + ": " + message;
  }

  private List<String> thrown(JShellException exception) {
    if (stopped || (exception instanceof EvalException && "java.lang.ThreadDeath".equals(((EvalException) exception).getExceptionClassName()))) {
      return List.of("error", "KeyboardInterrupt", "the execution was stopped", "KeyboardInterrupt: the execution was stopped");
    }
    String name = nameOf(exception);
    String message = exception.getMessage() == null ? "" : exception.getMessage();
    StringBuilder trace = new StringBuilder();
    appendTrace(trace, exception);
    // Its causes, as Java prints them (JShell hands them over as EvalExceptions too).
    for (Throwable cause = exception.getCause(); cause != null && trace.length() < 100_000; cause = cause.getCause()) {
      trace.append("\nCaused by: ");
      appendTrace(trace, cause);
    }
    return List.of("error", name, message, trace.toString());
  }

  private static String nameOf(Throwable exception) {
    if (exception instanceof EvalException) return ((EvalException) exception).getExceptionClassName();
    if (exception instanceof UnresolvedReferenceException) return "UnresolvedReferenceException";
    return exception.getClass().getName();
  }

  private static void appendTrace(StringBuilder trace, Throwable exception) {
    String message = exception.getMessage() == null ? "" : exception.getMessage();
    trace.append(nameOf(exception)).append(message.isEmpty() ? "" : ": " + message);
    for (StackTraceElement frame : exception.getStackTrace()) {
      // As the jshell tool writes them: the code's own frames by their snippet (`at div (#1:2)`,
      // `at (#2:1)` for a top-level statement), the JDK's as Java does.
      trace.append("\n\tat ");
      if (frame.getClassName().isEmpty()) {
        trace.append(frame.getMethodName()).append(frame.getMethodName().isEmpty() ? "" : " ").append("(").append(frame.getFileName()).append(":").append(frame.getLineNumber()).append(")");
      } else {
        trace.append(frame);
      }
    }
  }

  /** Sets (a null value: removes) variables of this process's environment, as System.getenv and new processes see it. */
  @SuppressWarnings("unchecked")
  private static void setEnv(Map<String, String> changes) throws ReflectiveOperationException {
    if (changes.isEmpty()) return;
    Class<?> processEnvironment = Class.forName("java.lang.ProcessEnvironment");
    Map<String, String> view = System.getenv();
    Field underlying = view.getClass().getDeclaredField("m");
    underlying.setAccessible(true);
    Map<String, String> unmodifiable = (Map<String, String>) underlying.get(view);
    Field environmentField = processEnvironment.getDeclaredField("theEnvironment");
    environmentField.setAccessible(true);
    Map<Object, Object> environment = (Map<Object, Object>) environmentField.get(null);
    Class<?> variable = Class.forName("java.lang.ProcessEnvironment$Variable");
    Class<?> value = Class.forName("java.lang.ProcessEnvironment$Value");
    var variableOf = variable.getDeclaredMethod("valueOf", String.class);
    var valueOf = value.getDeclaredMethod("valueOf", String.class);
    variableOf.setAccessible(true);
    valueOf.setAccessible(true);
    for (Map.Entry<String, String> change : changes.entrySet()) {
      Object key = variableOf.invoke(null, change.getKey());
      if (change.getValue() == null) {
        unmodifiable.remove(change.getKey());
        environment.remove(key);
      } else {
        unmodifiable.put(change.getKey(), change.getValue());
        environment.put(key, valueOf.invoke(null, change.getValue()));
      }
    }
  }

  private String readLine() throws IOException {
    ByteArrayOutputStream line = new ByteArrayOutputStream();
    for (;;) {
      int b = requests.read();
      if (b < 0) return null;
      if (b == '\n') return line.toString(StandardCharsets.UTF_8);
      line.write(b);
    }
  }

  private List<String> readMessage() throws IOException {
    String count = readLine();
    if (count == null) return null;
    List<String> fields = new ArrayList<>();
    DataInputStream data = new DataInputStream(requests);
    for (int i = Integer.parseInt(count.strip()); i > 0; i--) {
      String size = readLine();
      if (size == null) return null;
      byte[] bytes = new byte[Integer.parseInt(size.strip())];
      try {
        data.readFully(bytes);
      } catch (EOFException end) {
        return null;
      }
      fields.add(new String(bytes, StandardCharsets.UTF_8));
    }
    return fields;
  }

  private void writeMessage(List<String> fields) throws IOException {
    results.write((fields.size() + "\n").getBytes(StandardCharsets.UTF_8));
    for (String field : fields) {
      byte[] bytes = field.getBytes(StandardCharsets.UTF_8);
      results.write((bytes.length + "\n").getBytes(StandardCharsets.UTF_8));
      results.write(bytes);
    }
    results.flush();
  }
}
