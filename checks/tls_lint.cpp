// The certificate half of config_lint: the files fener and Patroni use for TLS, read with
// OpenSSL. Blocking; runs on the worker.
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "checks/config_lint.hpp"

namespace fener {

namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// Never prompt on a terminal for a key's pass phrase: an encrypted key is reported.
int no_passphrase(char*, int, int, void*) {
  return 0;
}

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::string when(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "?";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

std::string subject_of(X509* x) {
  char buf[256];
  X509_NAME_oneline(X509_get_subject_name(x), buf, sizeof buf);
  return buf;
}

struct Reader {
  std::vector<LintFinding>& out;
  std::vector<std::string>* checked;
  std::time_t now;
  int warning_days;
  std::set<std::string> seen;  // each file judged once even when several sets name it

  void note(const std::string& file) {
    if (checked && std::find(checked->begin(), checked->end(), file) == checked->end())
      checked->push_back(file);
  }

  void add(Status s, const std::string& file, const std::string& msg) {
    out.push_back({s, file, 0, "", msg});
  }

  BioPtr open(const std::string& file, const std::string& role, const TlsFileSet& set) {
    BioPtr bio(BIO_new_file(file.c_str(), "r"));
    if (!bio) {
      const int err = errno;
      ERR_clear_error();
      add(Status::critical, file,
          "cannot read the " + role + " of the " + set.what + " (" + std::strerror(err) +
              "; from " + set.source + ")");
    }
    return bio;
  }

  // Expired, not yet valid or ending soon.
  void judge_dates(X509* x, const std::string& file, const std::string& label,
                   const TlsFileSet& set) {
    std::time_t t = now;
    const ASN1_TIME* not_after = X509_get0_notAfter(x);
    const ASN1_TIME* not_before = X509_get0_notBefore(x);
    const std::string who = label + " (" + subject_of(x) + "; from " + set.source + ")";
    if (X509_cmp_time(not_after, &t) <= 0) {
      add(Status::critical, file, who + " expired on " + when(not_after));
      return;
    }
    if (X509_cmp_time(not_before, &t) > 0) {
      add(Status::critical, file, who + " is not valid before " + when(not_before));
      return;
    }
    int days = 0, secs = 0;
    ASN1_TIME* now_asn1 = ASN1_TIME_set(nullptr, now);
    const bool ok = now_asn1 && ASN1_TIME_diff(&days, &secs, now_asn1, not_after) == 1;
    ASN1_TIME_free(now_asn1);
    if (ok && days < warning_days) {
      add(Status::warning, file,
          who + " expires on " + when(not_after) + ", in " + std::to_string(days) +
              (days == 1 ? " day" : " days"));
    }
  }

  X509Ptr certificate(const TlsFileSet& set) {
    const std::string& file = set.cert_file;
    BioPtr bio = open(file, "certificate", set);
    if (!bio) return nullptr;
    X509Ptr x(PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr));
    if (!x) {
      add(Status::critical, file,
          "the " + set.what + " is not a PEM certificate (" + openssl_error() + "; from " +
              set.source + ")");
      return nullptr;
    }
    if (seen.insert("cert:" + file).second) judge_dates(x.get(), file, set.what, set);
    return x;
  }

  void ca_bundle(const TlsFileSet& set) {
    const std::string& file = set.ca_file;
    if (!seen.insert("ca:" + file).second) return;
    note(file);
    BioPtr bio = open(file, "CA file", set);
    if (!bio) return;
    int n = 0;
    while (X509Ptr x{PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr)}) {
      ++n;
      judge_dates(x.get(), file, "CA certificate for the " + set.what, set);
    }
    ERR_clear_error();  // the end of the file reads as an error
    if (n == 0)
      add(Status::critical, file,
          "the CA file of the " + set.what + " holds no PEM certificate (from " + set.source + ")");
  }

  void key(const TlsFileSet& set, X509* cert) {
    const std::string& file = set.key_file.empty() ? set.cert_file : set.key_file;
    if (!seen.insert("key:" + file + "|" + set.cert_file).second) return;
    if (!set.key_file.empty()) note(file);
    BioPtr bio = open(file, "key", set);
    if (!bio) return;
    PkeyPtr k(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
    if (!k) {
      const std::string why = openssl_error();
      add(Status::critical, file,
          set.key_file.empty()
              ? "no private key for the " + set.what + " (none configured and none in " +
                    set.cert_file + "; from " + set.source + ")"
              : "the key of the " + set.what + " is not a PEM private key, or is encrypted (" +
                    why + "; from " + set.source + ")");
      return;
    }
    if (cert && X509_check_private_key(cert, k.get()) != 1) {
      ERR_clear_error();
      add(Status::critical, file,
          "the key does not belong to the " + set.what + " " + set.cert_file + " (from " +
              set.source + ")");
    }
  }
};

}  // namespace

std::vector<LintFinding> lint_tls_files(const std::vector<TlsFileSet>& sets, std::time_t now,
                                        int warning_days, std::vector<std::string>* checked) {
  std::vector<LintFinding> out;
  Reader r{out, checked, now, warning_days, {}};
  for (const auto& set : sets) {
    if (!set.cert_file.empty()) {
      r.note(set.cert_file);
      X509Ptr cert = r.certificate(set);
      // Without a readable certificate the key cannot be matched; a separate key file is
      // still read.
      if (cert || !set.key_file.empty()) r.key(set, cert.get());
    }
    if (!set.ca_file.empty()) r.ca_bundle(set);
  }
  return out;
}

}  // namespace fener
