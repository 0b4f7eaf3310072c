// Clean twin: every host and pin comes from a constant of this file (imports with no warnings).
// Written from OkHttp's CertificatePinner documentation (Kotlin).
package com.example.net

import okhttp3.CertificatePinner
import okhttp3.OkHttpClient

private const val SHA256 = "sha256/"
const val API_HOST = "api.example.com"
val CDN_PATTERN = "**." + "cdn.example.com"

class PinnedClient {
    companion object {
        /* The leaf key and its pre-generated backup. */
        const val API_LEAF = SHA256 + "adArOhgPp1XK542znr5ECThlgeKq5oRCrecSF72KWfs="
        const val API_BACKUP = "sha256/xjFg2je3/YWZqCESIgk8DErgWQX5k4xZRC135qW9tEw="
        val CDN_PINS = arrayOf(
            "sha256/J/EYF2nTDIvughXaf2vdrwj+DK8NVUnJGB0wMXfaHqo=",
            "sha256/1rj5v9DR6ex4EI/t9e8osCN5cJZqZe23m3rv5ydCUAM=",
        )
    }

    fun client(): OkHttpClient {
        val pinner = CertificatePinner.Builder()
            .add(API_HOST, API_LEAF, API_BACKUP)
            .add(CDN_PATTERN, *CDN_PINS)
            .build()
        return OkHttpClient.Builder().certificatePinner(pinner).build()
    }
}
