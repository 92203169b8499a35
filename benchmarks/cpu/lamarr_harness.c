/* CPU cost of the Lamarr tracking library, one particle per call, as Lamarr calls it.
 *
 * Usage: lamarr_harness LIBRARY.so INPUT_DIR MIN_SECONDS
 * INPUT_DIR holds float32 row-major files: acc_in.f32 (n x 12), res_cond.f32 (m x 12), cov_cond.f32 (m x 15),
 * res_noise.f32 and cov_noise.f32 (m x 128). For each function the harness calls it once per row, over all
 * rows, repeating passes until MIN_SECONDS of process CPU time, and prints one CSV line per function:
 * function,calls,cpu_seconds. The acceptance and efficiency outputs of the first pass go to
 * INPUT_DIR/acc_out.f32 (n x 1) and INPUT_DIR/eff_out.f32 (n x 4).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef float *(*plugin_fn)(float *out, const float *in);
typedef float *(*generative_fn)(float *out, const float *cond, const float *noise);

static double cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *read_rows(const char *dir, const char *name, long width, long *rows) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(2); }
  fseek(f, 0, SEEK_END);
  long bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (bytes <= 0 || bytes % (long)(width * sizeof(float))) {
    fprintf(stderr, "%s: %ld bytes is not a whole number of %ld-float rows\n", path, bytes, width);
    exit(2);
  }
  float *data = malloc((size_t)bytes);
  if (!data || fread(data, 1, (size_t)bytes, f) != (size_t)bytes) { fprintf(stderr, "cannot read %s\n", path); exit(2); }
  fclose(f);
  *rows = bytes / (long)(width * sizeof(float));
  return data;
}

static void write_rows(const char *dir, const char *name, const float *data, long count) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, sizeof(float), (size_t)count, f) != (size_t)count) { fprintf(stderr, "cannot write %s\n", path); exit(2); }
  fclose(f);
}

static void *symbol(void *lib, const char *name) {
  void *fn = dlsym(lib, name);
  if (!fn) { fprintf(stderr, "symbol %s: %s\n", name, dlerror()); exit(2); }
  return fn;
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: %s LIBRARY.so INPUT_DIR MIN_SECONDS\n", argv[0]); return 2; }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
  const char *dir = argv[2];
  double min_seconds = atof(argv[3]);
  long n, m, m2, m3, m4;
  float *acc_in = read_rows(dir, "acc_in.f32", 12, &n);
  float *res_cond = read_rows(dir, "res_cond.f32", 12, &m);
  float *cov_cond = read_rows(dir, "cov_cond.f32", 15, &m2);
  float *res_noise = read_rows(dir, "res_noise.f32", 128, &m3);
  float *cov_noise = read_rows(dir, "cov_noise.f32", 128, &m4);
  if (m2 != m || m3 != m || m4 != m) { fprintf(stderr, "track files disagree on their row count\n"); return 2; }
  plugin_fn acceptance = (plugin_fn)symbol(lib, "acceptance");
  plugin_fn efficiency = (plugin_fn)symbol(lib, "efficiency");
  generative_fn resolution = (generative_fn)symbol(lib, "resolution");
  generative_fn covariance = (generative_fn)symbol(lib, "covariance");
  float *acc_out = calloc((size_t)n, sizeof(float));
  float *eff_out = calloc((size_t)n * 4, sizeof(float));
  float out[32];
  volatile float sink = 0.0f;

  long calls = 0;
  double start = cpu_seconds(), used = 0.0;
  do {
    for (long i = 0; i < n; ++i) { acceptance(acc_out + i, acc_in + 12 * i); }
    calls += n;
    used = cpu_seconds() - start;
  } while (used < min_seconds);
  printf("acceptance,%ld,%.9f\n", calls, used);

  calls = 0; start = cpu_seconds();
  do {
    for (long i = 0; i < n; ++i) { efficiency(eff_out + 4 * i, acc_in + 12 * i); }
    calls += n;
    used = cpu_seconds() - start;
  } while (used < min_seconds);
  printf("efficiency,%ld,%.9f\n", calls, used);

  calls = 0; start = cpu_seconds();
  do {
    for (long i = 0; i < m; ++i) { sink += resolution(out, res_cond + 12 * i, res_noise + 128 * i)[0]; }
    calls += m;
    used = cpu_seconds() - start;
  } while (used < min_seconds);
  printf("resolution,%ld,%.9f\n", calls, used);

  calls = 0; start = cpu_seconds();
  do {
    for (long i = 0; i < m; ++i) { sink += covariance(out, cov_cond + 15 * i, cov_noise + 128 * i)[0]; }
    calls += m;
    used = cpu_seconds() - start;
  } while (used < min_seconds);
  printf("covariance,%ld,%.9f\n", calls, used);

  write_rows(dir, "acc_out.f32", acc_out, n);
  write_rows(dir, "eff_out.f32", eff_out, 4 * n);
  fprintf(stderr, "checksum %g\n", (double)sink);
  dlclose(lib);
  return 0;
}
