"""In CI (``CI`` set) a skipped test is a failure: the browser and Binder tests must run there."""
import os


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("CI") and skipped and exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped; a skip is a failure here "
                            "(see the skip reasons above)", red=True)
        session.exitstatus = 1
