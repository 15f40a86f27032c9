# The attention explorer in headless Chromium (tests/browser/: puppeteer-core from
# tests/browser/package-lock.json, installed by scripts/setup.sh --tests with npm ci; Debian's
# /usr/bin/chromium, nothing downloaded). Skips (77) when chromium, node or puppeteer-core
# are missing.
add_test(NAME browser_explorer COMMAND ${GT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/browser/test_explorer.py)
set_tests_properties(browser_explorer PROPERTIES ENVIRONMENT "${GT_TEST_ENV}" TIMEOUT 600
                     SKIP_RETURN_CODE 77 LABELS "browser;attention")
