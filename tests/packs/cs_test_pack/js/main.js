// Front-end extension of the test pack.
console.log("cs_test_pack loaded");
