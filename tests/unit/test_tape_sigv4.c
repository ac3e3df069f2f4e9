/*
 * test_tape_sigv4.c — tape/sigv4.c against AWS's published SigV4 examples:
 * the "get-vanilla" and "get-vanilla-query-order-key-case" vectors of the
 * SigV4 test suite and the S3 "GET Object" example of the S3 API reference.
 * The same signer signs every real S3 request (tape/backend_s3.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "sigv4.h"

static const char *EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

static void test_get_vanilla(void **state)
{
	(void)state;
	struct sigv4_header h[] = {
		{"x-amz-date", "20150830T123600Z"},
		{"host", "example.amazonaws.com"},
	};
	struct sigv4_request r = {"GET", "/", "", h, 2, EMPTY_SHA};
	char creq[1024], sts[512], sig[65], auth[512];
	assert_int_equal(sigv4_canonical_request(&r, creq, sizeof(creq)), 0);
	assert_string_equal(creq, "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n"
				  "\nhost;x-amz-date\n"
				  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_int_equal(sigv4_string_to_sign("20150830T123600Z", "us-east-1", "service", creq, sts,
					      sizeof(sts)),
			 0);
	assert_string_equal(sts, "AWS4-HMAC-SHA256\n20150830T123600Z\n"
				 "20150830/us-east-1/service/aws4_request\n"
				 "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63");
	assert_int_equal(sigv4_signature("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
					 "20150830T123600Z", "us-east-1", "service", sts, sig),
			 0);
	assert_string_equal(sig, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
	struct sigv4_credentials c = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
				      "us-east-1", "service"};
	assert_int_equal(sigv4_authorization(&r, &c, "20150830T123600Z", auth, sizeof(auth)), 0);
	assert_string_equal(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
				  "aws4_request, SignedHeaders=host;x-amz-date, "
				  "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

static void test_get_vanilla_query_order(void **state)
{
	(void)state;
	struct sigv4_header h[] = {
		{"host", "example.amazonaws.com"},
		{"x-amz-date", "20150830T123600Z"},
	};
	/* the caller passes the query already sorted (Param1 before Param2) */
	struct sigv4_request r = {"GET", "/", "Param1=value1&Param2=value2", h, 2, EMPTY_SHA};
	char creq[1024], sts[512], sig[65];
	assert_int_equal(sigv4_canonical_request(&r, creq, sizeof(creq)), 0);
	assert_int_equal(sigv4_string_to_sign("20150830T123600Z", "us-east-1", "service", creq, sts,
					      sizeof(sts)),
			 0);
	assert_int_equal(sigv4_signature("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
					 "20150830T123600Z", "us-east-1", "service", sts, sig),
			 0);
	assert_string_equal(sig, "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

static void test_s3_get_object(void **state)
{
	(void)state;
	struct sigv4_header h[] = {
		{"host", "examplebucket.s3.amazonaws.com"},
		{"range", "bytes=0-9"},
		{"x-amz-content-sha256", EMPTY_SHA},
		{"x-amz-date", "20130524T000000Z"},
	};
	struct sigv4_request r = {"GET", "/test.txt", "", h, 4, EMPTY_SHA};
	struct sigv4_credentials c = {"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
				      "us-east-1", "s3"};
	char creq[1024], sts[512], auth[512];
	assert_int_equal(sigv4_canonical_request(&r, creq, sizeof(creq)), 0);
	assert_int_equal(sigv4_string_to_sign("20130524T000000Z", "us-east-1", "s3", creq, sts,
					      sizeof(sts)),
			 0);
	assert_string_equal(sts, "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n"
				 "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
	assert_int_equal(sigv4_authorization(&r, &c, "20130524T000000Z", auth, sizeof(auth)), 0);
	assert_string_equal(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/"
				  "s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;"
				  "x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba"
				  "48dd91039c6036bdb41");
}

static void test_uri_encode(void **state)
{
	(void)state;
	char out[128];
	assert_int_equal(sigv4_uri_encode("a b/c~d=e&f", 1, out, sizeof(out)), 0);
	assert_string_equal(out, "a%20b/c~d%3De%26f");
	assert_int_equal(sigv4_uri_encode("packs/", 0, out, sizeof(out)), 0);
	assert_string_equal(out, "packs%2F");
	assert_int_equal(sigv4_uri_encode("abcdef", 1, out, 4), -ENAMETOOLONG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_vanilla),
		cmocka_unit_test(test_get_vanilla_query_order),
		cmocka_unit_test(test_s3_get_object),
		cmocka_unit_test(test_uri_encode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
