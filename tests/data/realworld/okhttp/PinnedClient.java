// Clean twin (Java): static final constants, an array passed to the varargs, concatenation.
package com.example.net;

import okhttp3.CertificatePinner;
import okhttp3.OkHttpClient;

public final class PinnedClient {
    private static final String API_HOST = "api.example.com";
    private static final String AUTH_HOST = "*." + "auth.example.com";
    static final String PREFIX = "sha256/";
    public static final String[] API_PINS = {
        PREFIX + "adArOhgPp1XK542znr5ECThlgeKq5oRCrecSF72KWfs=",
        "sha256/xjFg2je3/YWZqCESIgk8DErgWQX5k4xZRC135qW9tEw=",
    };
    private static final String AUTH_1 = "sha256/VUhxCCWvkTSsYlt7760p/vajfoFoaNZHZ2UvP4iBRbk=";
    private static final String AUTH_2 = "sha256/CBp6iKFzxFGDOHJuMM5Kzqg1yfPY4/UHka/ULLyOjZQ=";

    private PinnedClient() {}

    public static OkHttpClient client() {
        CertificatePinner.Builder builder = new CertificatePinner.Builder();
        builder.add(API_HOST, API_PINS);
        builder.add(AUTH_HOST, AUTH_1, AUTH_2);
        return new OkHttpClient.Builder().certificatePinner(builder.build()).build();
    }
}
