# Compares medcl's clinical statistics with R's reference packages on seeded cases: heavy ties,
# tiny groups, 1% prevalence, perfect and inverted separation, constant scores, censored and tied
# survival times. Numbers travel as hexadecimal floats, so no digit is lost. Point estimates must
# agree to 1e-9, intervals and p-values to 1e-6 (absolute, or relative for large values).
#   Rscript tests/r/check_against_r.R path/to/medcl_rcheck
# Exits 0 when all agree, 1 on a disagreement (listed), 77 when R lacks a package (skipped).
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1) stop("usage: check_against_r.R medcl_rcheck")
for (p in c("pROC", "survival", "riskRegression")) {
  if (!requireNamespace(p, quietly = TRUE)) {
    cat(sprintf("medcl-test-skipped: the R package %s is missing (Debian: r-cran-%s)\n", p, tolower(p)))
    quit(status = 77)
  }
}
suppressMessages({ library(pROC); library(survival); library(riskRegression) })
hex <- function(x) paste(sprintf("%a", as.numeric(x)), collapse = " ")
ctl <- glm.control(epsilon = 1e-16, maxit = 200)

cases <- list()
binary <- function(a, b, y) list(kind = "binary", a = a, b = b, y = y)
survival_case <- function(t, e, r, h) list(kind = "survival", t = t, e = e, r = r, h = h)
set.seed(20261204)
n <- 60; y <- rbinom(n, 1, 0.4)
cases[[1]] <- binary((round(runif(n) * 4) + 0.5) / 5, (round(runif(n) * 3) + 0.5) / 4, y)  # heavy ties
y <- c(1, 1, 1, 0, 0, 0, 0)
cases[[2]] <- binary(c(0.7, 0.4, 0.9, 0.3, 0.5, 0.2, 0.45), c(0.6, 0.65, 0.8, 0.1, 0.7, 0.3, 0.2), y)  # 3 vs 4
n <- 500; y <- c(rep(1, 5), rep(0, n - 5)); x <- rnorm(n) + 1.5 * y
cases[[3]] <- binary(plogis(x - 4), plogis(rnorm(n) - 4), y)  # 1% prevalence
y <- rep(c(0, 1), each = 10)
cases[[4]] <- binary(0.1 + 0.8 * y + runif(20) * 0.05, rep(0.5, 20), y)  # perfect vs constant
cases[[5]] <- binary(0.9 - 0.8 * y - runif(20) * 0.05, runif(20), y)  # inverted
n <- 200; y <- rbinom(n, 1, 0.3); x <- rnorm(n) + y
cases[[6]] <- binary(plogis(1.3 * x - 1.5), plogis(0.7 * x - 1), y)  # moderate, miscalibrated
n <- 60
t <- round(rexp(n, 0.3) * 2) / 2 + 0.5; e <- rbinom(n, 1, 0.7); r <- round(runif(n) * 16) / 16 + 0.25 * (t < 2)
cases[[7]] <- survival_case(t, e, r, c(1, 2, 3, 5))  # tied times and risks
t <- c(1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 7, 8); e <- c(1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0)
cases[[8]] <- survival_case(t, e, c(9, 7, 7, 6, 5, 6, 3, 2, 4, 1, 2, 1), c(2, 4, 6))  # small, tied
n <- 150; t <- rexp(n, 0.2); cens <- rexp(n, 0.1); e <- as.numeric(t <= cens); t <- pmin(t, cens)
cases[[9]] <- survival_case(t, e, -log(t) + rnorm(n), as.numeric(quantile(t, c(0.25, 0.5))))

file <- tempfile(fileext = ".txt")
lines <- vapply(cases, function(c) {
  if (c$kind == "binary") sprintf("binary %d %s %s %s", length(c$y), hex(c$a), hex(c$b), hex(c$y))
  else sprintf("survival %d %d %s %s %s %s", length(c$t), length(c$h), hex(c$t), hex(c$e), hex(c$r), hex(c$h))
}, "")
writeLines(lines, file)
out <- system2(args[1], file, stdout = TRUE)
if (!is.null(attr(out, "status"))) stop("medcl_rcheck failed: ", paste(out, collapse = "\n"))
parts <- strsplit(out, " ")
got <- list()
for (p in parts) got[[paste(p[1], p[2])]] <- if (p[3] == "error") NA else as.numeric(p[3])

ref <- list()
put <- function(id, name, value, tol) ref[[paste(id, name)]] <<- list(value = value, tol = tol)
for (id in seq_along(cases)) {
  c <- cases[[id]]
  if (c$kind == "binary") {
    ra <- roc(c$y, c$a, levels = c(0, 1), direction = "<", quiet = TRUE)
    rb <- roc(c$y, c$b, levels = c(0, 1), direction = "<", quiet = TRUE)
    put(id, "auroc", as.numeric(auc(ra)), 1e-9)
    ci <- pmin(pmax(as.numeric(ci.auc(ra, method = "delong")), 0), 1)  # medcl clips to [0, 1]
    put(id, "delong_lower", ci[1], 1e-6)
    put(id, "delong_upper", ci[3], 1e-6)
    tt <- suppressWarnings(roc.test(ra, rb, method = "delong", paired = TRUE))
    put(id, "paired_z", as.numeric(tt$statistic), 1e-6)
    put(id, "paired_p", tt$p.value, 1e-6)
    put(id, "brier", mean((c$a - c$y)^2), 1e-12)
    x <- qlogis(c$a)
    f <- tryCatch(glm(c$y ~ x, family = binomial, control = ctl), warning = function(w) NULL)
    g <- tryCatch(glm(c$y ~ 1 + offset(x), family = binomial, control = ctl), warning = function(w) NULL)
    ok <- !is.null(f) && all(is.finite(coef(f)))
    put(id, "cal_intercept", if (ok) coef(f)[[1]] else NA, 1e-9)
    put(id, "cal_intercept_lower", if (ok) confint.default(f)[1, 1] else NA, 1e-6)
    put(id, "cal_slope", if (ok) coef(f)[[2]] else NA, 1e-9)
    put(id, "cal_slope_upper", if (ok) confint.default(f)[2, 2] else NA, 1e-6)
    put(id, "citl", if (!is.null(g)) coef(g)[[1]] else NA, 1e-9)
    # Average precision from pROC's confusion at each distinct threshold, highest first:
    # sum of (recall gained) x (precision there).
    pr <- coords(ra, x = "all", ret = c("threshold", "recall", "precision"), transpose = FALSE)
    pr <- pr[order(-pr$threshold), ]
    gain <- diff(c(0, pr$recall))
    put(id, "auprc", sum(ifelse(gain > 0, gain * pr$precision, 0)), 1e-9)
    ss <- coords(ra, x = "all", ret = c("sensitivity", "specificity"), transpose = FALSE)
    put(id, "sens_at_spec90", max(ss$sensitivity[ss$specificity >= 0.9]), 1e-9)
    t <- sort(c$a)[length(c$a) %/% 2 + 1]
    op <- coords(ra, x = t, input = "threshold", ret = c("sensitivity", "specificity"), transpose = FALSE)
    put(id, "op_sensitivity", op$sensitivity[1], 1e-12)
    put(id, "op_specificity", op$specificity[1], 1e-12)
    # The fairness audit's groups: even and odd positions, each group measured on its own.
    gauc <- c()
    for (k in 0:1) {
      sel <- (seq_along(c$y) - 1) %% 2 == k
      gy <- c$y[sel]; ga <- c$a[sel]; g <- paste0("group", k, "_")
      both <- sum(gy == 1) >= 2 && sum(gy == 0) >= 2  # medcl's minimum: DeLong needs two of each
      gr <- if (both) roc(gy, ga, levels = c(0, 1), direction = "<", quiet = TRUE) else NULL
      gauc <- c(gauc, if (both) as.numeric(auc(gr)) else NA)
      put(id, paste0(g, "auroc"), if (both) as.numeric(auc(gr)) else NA, 1e-9)
      put(id, paste0(g, "delong_upper"),
          if (both) min(1, as.numeric(ci.auc(gr, method = "delong"))[3]) else NA, 1e-6)
      gx <- qlogis(ga)
      gf <- if (both) tryCatch(glm(gy ~ gx, family = binomial, control = ctl), warning = function(w) NULL) else NULL
      gok <- !is.null(gf) && all(is.finite(coef(gf)))
      gg <- if (gok) glm(gy ~ 1 + offset(gx), family = binomial, control = ctl) else NULL
      put(id, paste0(g, "cal_slope"), if (gok) coef(gf)[[2]] else NA, 1e-9)
      put(id, paste0(g, "citl"), if (gok) coef(gg)[[1]] else NA, 1e-9)
      put(id, paste0(g, "sensitivity"), if (both) mean(ga[gy == 1] >= t) else NA, 1e-12)
      put(id, paste0(g, "specificity"), if (both) mean(ga[gy == 0] < t) else NA, 1e-12)
    }
    put(id, "auroc_gap", if (all(!is.na(gauc))) max(gauc) - min(gauc) else NA, 1e-9)
  } else {
    d <- data.frame(time = c$t, status = c$e, risk = c$r)
    put(id, "c_index", concordance(Surv(time, status) ~ risk, data = d, reverse = TRUE)$concordance, 1e-9)
    s <- Score(list(m = d$risk), formula = Hist(time, status) ~ 1, data = d, times = c$h,
               metrics = "auc", null.model = FALSE, cens.model = "km", se.fit = FALSE)
    for (k in seq_along(c$h)) put(id, paste0("td_auroc_", k), s$AUC$score$AUC[k], 1e-9)
  }
}

bad <- 0
for (key in names(ref)) {
  want <- ref[[key]]$value; tol <- ref[[key]]$tol; have <- got[[key]]
  if (is.null(have)) { cat("missing from medcl:", key, "\n"); bad <- bad + 1; next }
  if (is.na(want) || is.na(have)) {
    same <- is.na(want) && is.na(have)
  } else if (is.infinite(want) || is.infinite(have)) {
    same <- identical(want, have)
  } else {
    same <- abs(have - want) <= tol * max(1, abs(want))
  }
  status <- if (same) "ok  " else "DIFF"
  cat(sprintf("%s case %-22s R %-24s medcl %s\n", status, key, format(want, digits = 17),
              format(have, digits = 17)))
  if (!same) bad <- bad + 1
}
cat(sprintf("%d statistics compared, %d disagree\n", length(ref), bad))
quit(status = if (bad == 0) 0 else 1)
